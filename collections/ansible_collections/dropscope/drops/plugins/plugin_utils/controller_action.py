# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The base of dropscope's action plugins: modules whose whole job is on the controller.

Run in Ansible's own process, such a module costs the controller no module payload, no Python start and no
second encoding of its arguments (run_record's are every host's results).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase


class ControllerAction(ActionBase):
    """Validates the task's options against ARGUMENT_SPEC and returns `run_on_controller`'s result."""

    TRANSFERS_FILES = False
    _requires_connection = False
    ARGUMENT_SPEC = {}

    def run(self, tmp=None, task_vars=None):
        result = super(ControllerAction, self).run(tmp, task_vars)
        del tmp  # unused
        dummy, params = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)
        result.update(self.run_on_controller(params, check_mode=bool(self._task.check_mode)))
        return result

    def run_on_controller(self, params, check_mode):
        """The task's result from its validated options (``failed`` and ``msg`` when it failed)."""
        raise NotImplementedError
