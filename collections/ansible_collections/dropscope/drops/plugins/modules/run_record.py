#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: run_record
short_description: Write the results of a dropscope run into a new run directory on the controller
version_added: 0.1.0
description:
  - Takes the registered result of M(dropscope.drops.drop_capture) of every host of a run (its capture and
    the counters it read before and after, in the capture's window) and writes them as one JSON file per
    host plus a C(manifest.json) into a new directory O(runs_dir)/O(run_id).
  - The results of the older three-task diagnose (M(dropscope.drops.drop_counters) before and after beside
    the capture) are still accepted.
  - Each host gets a status (V(ok), V(unreachable) or V(failed)) and the error of the first task that did
    not succeed; unreachable and failed hosts are recorded, never dropped.
  - A capture that did not run (its C(status) is V(unavailable) or V(failed), for example the asked backend
    does not work on that host) makes the host V(failed); its error starts with C(capture failed) and names
    the backend, the status and the reason. The counters it read are kept. A capture that ran without
    reading counters (M(dropscope.drops.drop_capture) with C(counters=false)) makes the host V(failed) too. In check mode a
    capture that would run (C(status=check_mode)) counts as ok, so RV(incomplete) names the hosts a real
    run would leave incomplete.
  - The directory is written under a temporary name and renamed into place when complete, so a
    half-written run is never taken for a result. An existing run directory is never overwritten.
  - Host file names are made safe from inventory names (no path separators, no leading dot); the real
    name is kept inside the file and in the manifest.
  - Always runs on the controller, in Ansible's own process, whatever the task's host (an action plugin, so
    no module payload is copied or started), and writes the run directory there.
options:
  runs_dir:
    description:
      - Directory that holds the run directories; created if missing.
    type: path
    required: true
  run_id:
    description:
      - Name of the new run directory. Defaults to the UTC time, for example C(20261127T030501Z).
      - Letters, digits, C(.), C(_) and C(-) only.
    type: str
  results:
    description:
      - Per inventory host name, a dictionary with the registered result C(capture) of
        M(dropscope.drops.drop_capture) (which carries C(before), C(capture), C(after) and C(capabilities)).
      - The older form, the registered results C(before) and C(after) of M(dropscope.drops.drop_counters) beside
        C(capture), and optionally C(capabilities) (M(dropscope.drops.drop_capabilities)), is read as it was.
    type: dict
    required: true
  manifest:
    description:
      - Extra fields for C(manifest.json), such as C(command), C(inventory), C(groups), C(parameters), C(started), C(versions).
    type: dict
    default: {}
extends_documentation_fragment:
  - dropscope.drops.attributes
  - dropscope.drops.attributes.controller
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is written; the module returns the hosts' statuses it would record.
seealso:
  - module: dropscope.drops.drop_counters
  - module: dropscope.drops.drop_capture
author:
  - dropscope maintainers (@dropscope)
"""

EXAMPLES = r"""
- name: Write the run directory
  dropscope.drops.run_record:
    runs_dir: "{{ playbook_dir }}/../runs"
    results:
      h1:
        capture: "{{ hostvars['h1'].diagnose_capture }}"
    manifest:
      command: "ansible-playbook playbooks/diagnose-drops.yml"
  delegate_to: localhost
  run_once: true
  register: dropscope_run
"""

RETURN = r"""
run_dir:
  description: The run directory that was written (in check mode, the one that would be written).
  returned: always
  type: str
  sample: /home/ops/dropscope/runs/20261127T030501Z
run_id:
  description: Name of the run directory.
  returned: always
  type: str
  sample: 20261127T030501Z
hosts:
  description: Per host, its status and error as recorded in the manifest.
  returned: always
  type: list
  elements: dict
  sample: [{"host": "h1", "file": "hosts/h1.json", "status": "ok", "error": null}]
incomplete:
  description: Names of the hosts whose status is not V(ok).
  returned: always
  type: list
  elements: str
  sample: ["h2"]
window_difference_s:
  description:
    - The largest difference, over the hosts, between a host's counters interval and its capture window
      (the time its counters took to read), in seconds; V(null) when no capture went live.
  returned: success
  type: float
  sample: 0.0127
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dropscope.drops.plugins.module_utils.run_record import ARGUMENT_SPEC, record_run


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = record_run(module.params, check_mode=module.check_mode)
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
