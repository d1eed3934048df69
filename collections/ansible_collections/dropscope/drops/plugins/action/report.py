# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action plugin of dropscope.drops.report: runs `dropscope report RUN_DIR` from the controller's own process.

Through ansible.builtin.command the same command cost the controller a module payload and a module's Python
start beside the report's own (about 0.6 s of the run's fixed cost); here it is one process, no shell.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess
import sys

from ansible_collections.dropscope.drops.plugins.plugin_utils.controller_action import ControllerAction


class ActionModule(ControllerAction):

    ARGUMENT_SPEC = dict(run_dir=dict(type="path", required=True))

    def run_on_controller(self, params, check_mode):
        run_dir = params["run_dir"]
        # The Python that runs Ansible: the playbook's documented place for the dropscope package.
        argv = [sys.executable, "-m", "dropscope", "report", run_dir]
        result = dict(changed=False, cmd=argv, report_json=os.path.join(run_dir, "report.json"),
                      report_html=os.path.join(run_dir, "report.html"))
        if check_mode:
            result["msg"] = "check mode: nothing rendered"
            return result
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        result.update(changed=proc.returncode == 0, rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
            msg = "dropscope report %s failed (exit %d): %s" % (run_dir, proc.returncode, last)
            result.update(failed=True, msg=msg)
        return result
