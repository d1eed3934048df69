#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is an action plugin (plugins/action/report.py): this file only documents it.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: report
short_description: Render a run directory's report on the controller with the dropscope command
version_added: 0.2.0
description:
  - Runs C(dropscope report RUN_DIR) with the Python that runs Ansible (the C(dropscope) package must be
    installed there), which writes C(report.json) and C(report.html) into O(run_dir) and records the run
    in the run history beside it.
  - Runs in Ansible's own process on the controller (an action plugin), and starts the command without a
    shell, so a run directory's name is only ever an argument.
  - The task fails when the command does, with the command's last error line in its message.
options:
  run_dir:
    description:
      - The run directory, as M(dropscope.drops.run_record) returns it in C(run_dir).
    type: path
    required: true
extends_documentation_fragment:
  - dropscope.drops.attributes
  - dropscope.drops.attributes.controller
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is rendered (the run directory is not written in check mode either).
seealso:
  - module: dropscope.drops.run_record
author:
  - dropscope maintainers (@dropscope)
"""

EXAMPLES = r"""
- name: Render report.html and report.json
  dropscope.drops.report:
    run_dir: "{{ dropscope_run.run_dir }}"
"""

RETURN = r"""
cmd:
  description: The command that was run (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["/usr/bin/python3", "-m", "dropscope", "report", "/home/ops/dropscope/runs/20261127T030501Z"]
report_json:
  description: Path of the report's JSON.
  returned: always
  type: str
  sample: /home/ops/dropscope/runs/20261127T030501Z/report.json
report_html:
  description: Path of the report's page.
  returned: always
  type: str
  sample: /home/ops/dropscope/runs/20261127T030501Z/report.html
rc:
  description: The command's exit code.
  returned: when the command ran
  type: int
  sample: 0
stdout:
  description: What the command printed (the paths it wrote).
  returned: when the command ran
  type: str
stderr:
  description: The command's error output.
  returned: when the command ran
  type: str
"""
