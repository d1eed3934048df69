#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drop_capabilities
short_description: Say which ways of capturing packet drops work on a host, and why the others do not
version_added: 0.1.0
description:
  - Reads the kernel release, whether tracefs is mounted or mountable, whether the C(skb:kfree_skb)
    tracepoint exists and which fields it has (C(reason), C(location), C(rx_sk)), how many drop reason
    names it lists, whether the kernel has the C(NET_DM) generic-netlink family (asked with a netlink
    socket), the C(perf), C(bpftrace) and C(dropwatch) binaries and versions, kernel BTF, and the
    privileges the module runs with.
  - Returns the C(ladder) of capture backends in the order C(backend=auto) of
    M(dropscope.drops.drop_capture) tries them, each with C(available) and the C(reason) it is not, and
    C(chosen), the backend C(auto) would use.
  - When tracefs is not mounted (for example inside C(ip netns exec)) and the module runs as root, it
    mounts tracefs for the time of the check and unmounts it again (not in check mode).
options: {}
extends_documentation_fragment:
  - dropscope.drops.attributes
  - dropscope.drops.attributes.read_only
  - dropscope.drops.attributes.linux
attributes:
  check_mode:
    details:
      - Only reads; in check mode tracefs is never mounted, so the tracepoint may be reported missing.
seealso:
  - module: dropscope.drops.drop_capture
author:
  - dropscope maintainers (@dropscope)
"""

EXAMPLES = r"""
- name: Find out how this host can capture drops
  dropscope.drops.drop_capabilities:
  become: true
  register: caps

- name: Capture with the backend auto would choose
  dropscope.drops.drop_capture:
    backend: "{{ caps.capabilities.chosen | default('auto', true) }}"
  become: true

- name: Say which backends are missing and why
  ansible.builtin.debug:
    msg: "{{ item.backend }}: {{ item.reason }}"
  loop: "{{ caps.capabilities.ladder | rejectattr('available') }}"
"""

RETURN = r"""
capabilities:
  description: What the host offers (see docs/run-format.md, C(capabilities)).
  returned: always
  type: dict
  contains:
    schema_version:
      description: Version of this layout.
      type: int
      sample: 1
    kernel_release:
      description: C(uname -r).
      type: str
      sample: 6.18.44
    tracefs:
      description: C(mounted), C(path), C(mountable) (the kernel knows the filesystem), C(instances) (has
        C(instances/)), C(mounted_for_check) (mounted by this module for the check, then unmounted).
      type: dict
      sample: {"mounted": true, "path": "/sys/kernel/tracing", "mountable": true, "instances": true,
               "mounted_for_check": false}
    kfree_skb:
      description: C(present), C(fields) (without C(skbaddr)), C(reason_names) (how many), C(format) (its path).
      type: dict
      sample: {"present": true, "fields": ["location", "rx_sk", "protocol", "reason"], "reason_names": 127,
               "format": "/sys/kernel/tracing/events/skb/kfree_skb/format"}
    net_dm:
      description: Whether the kernel has the NET_DM generic-netlink family (what dropwatch needs).
      type: dict
      sample: {"present": false, "family_id": null, "error": null}
    tools:
      description: Per tool (C(perf), C(bpftrace), C(dropwatch)), C(path) (null if not installed),
        C(version), C(runs) and C(error).
      type: dict
      sample: {"bpftrace": {"path": "/usr/bin/bpftrace", "version": "0.17.0", "runs": true, "error": null}}
    btf:
      description: Whether C(/sys/kernel/btf/vmlinux) exists.
      type: bool
      sample: true
    privileges:
      description: C(euid), C(cap_sys_admin), C(cap_bpf), C(cap_perfmon), C(cap_net_admin) (effective set)
        and C(perf_event_paranoid).
      type: dict
      sample: {"euid": 0, "cap_sys_admin": true, "cap_bpf": true, "cap_perfmon": true, "cap_net_admin": true,
               "perf_event_paranoid": 2}
    ladder:
      description: The capture backends, cheapest first, each with C(backend), C(available) and C(reason)
        (null when available).
      type: list
      elements: dict
      sample: [{"backend": "bpftrace", "available": true, "reason": null},
               {"backend": "dropwatch", "available": false, "reason": "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)"}]
    chosen:
      description: The backend C(backend=auto) would use, or null when none is available.
      type: str
      sample: bpftrace
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dropscope.drops.plugins.module_utils.capabilities import collect_capabilities
from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import HostReader
from ansible_collections.dropscope.drops.plugins.module_utils.tracefs_capture import TracefsMount


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    reader = HostReader.for_module(module)
    try:
        with TracefsMount(reader, allowed=not module.check_mode) as mount:
            caps = collect_capabilities(reader)
            if mount.mounted_here:
                caps["tracefs"]["mounted"] = False
            caps["tracefs"]["mounted_for_check"] = mount.mounted_here
    except (IOError, OSError) as exc:
        module.fail_json(msg="Failed to read the host's capabilities: %s" % exc)
    module.exit_json(changed=False, capabilities=caps)


if __name__ == "__main__":
    main()
