# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Module attributes every dropscope.drops module states (check mode, diff mode, platform).

Use the standard fragment with the ones that fit:
``extends_documentation_fragment: [dropscope.drops.attributes, dropscope.drops.attributes.read_only,
dropscope.drops.attributes.linux]``. A module adds its own ``details`` under ``attributes``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Standard fragment: what each attribute means.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description:
      - Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  platform:
    description: Target OS/families that can be operated against.
"""

    # The module reads the host and changes nothing on it.
    READ_ONLY = r"""
options: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
    details:
      - Nothing on the host is changed, so there is no diff.
"""

    # The module runs on Linux hosts with the Python standard library only.
    LINUX = r"""
options: {}
requirements:
  - Python 3.8 or newer on the managed host (standard library only; tests/config.yml says the same).
attributes:
  platform:
    support: full
    platforms: linux
"""

    # The module's whole job is on the controller: an action plugin runs it in Ansible's own process.
    CONTROLLER = r"""
options: {}
attributes:
  diff_mode:
    support: none
    details:
      - No diff is produced.
  platform:
    support: full
    platforms: posix
    details:
      - Runs on the controller, in Ansible's own process (an action plugin), whatever the task's host.
"""
