# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action plugin of dropscope.drops.run_record: writes the run directory in the controller's own process.

The module's job is controller-only, so nothing is copied or started: shipping the module would cost the
controller a module payload, a Python start and every host's results encoded and decoded once more (about
1.5 s of CPU at 30 hosts, more than the rest of the report). Same options, same logic, same result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase
from ansible_collections.dropscope.drops.plugins.module_utils.run_record import ARGUMENT_SPEC, record_run


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # unused
        dummy, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        result.update(record_run(params, check_mode=bool(self._task.check_mode)))
        return result
