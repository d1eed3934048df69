#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drop_counters
short_description: Take one snapshot of every packet drop counter of a Linux host
version_added: 0.1.0
description:
  - Reads, once, every kernel counter that moves when the host drops packets and returns them as one
    normalized snapshot (schema version 1) for the dropscope report.
  - Per interface, the kernel statistics from C(/sys/class/net/*/statistics) (or C(/proc/net/dev)) and
    every C(ethtool -S) counter; a driver that keeps no statistics is recorded as such, not as an error.
  - Protocol counters from C(/proc/net/snmp), C(/proc/net/netstat) and C(/proc/net/snmp6) under nstat
    names such as C(UdpNoPorts), C(TcpExtListenOverflows) or C(IpOutDiscards).
  - Per-CPU C(/proc/net/softnet_stat), C(tc -s) qdisc drops, overlimits and backlog per device,
    per-socket UDP drops from C(/proc/net/udp) and C(/proc/net/udp6), and firewall rule counters (nftables,
    and iptables-legacy / ip6tables-legacy where the network namespace has legacy tables).
  - A source that cannot be read is listed in RV(snapshot.errors); the rest of the snapshot is still returned.
  - The module only reads; it never changes the host.
  - M(dropscope.drops.drop_capture) reads the same snapshot itself, twice, in its capture's window; this
    module is for counters alone.
options:
  ethtool:
    description:
      - Read C(ethtool -S) for every interface.
    type: bool
    default: true
  firewall:
    description:
      - Read the counters of nftables rules (C(nft -a list ruleset)) and of iptables-legacy / ip6tables-legacy rules
        (C(iptables-legacy-save -c), C(ip6tables-legacy-save -c)); needs root.
      - Legacy rules are read only where C(/proc/net/ip_tables_names) (C(ip6_tables_names)) lists a table, so no
        kernel module is ever loaded; iptables-nft rules are part of the nftables ruleset.
    type: bool
    default: true
extends_documentation_fragment:
  - dropscope.drops.attributes
  - dropscope.drops.attributes.read_only
  - dropscope.drops.attributes.linux
attributes:
  check_mode:
    details:
      - The module only reads, so check mode returns the same snapshot.
notes:
  - Reading nftables counters needs root (C(become=true)); without it the firewall section is empty and
    the error is listed in RV(snapshot.errors).
  - Counters of C(/proc/net/*) belong to the network namespace the module runs in.
seealso:
  - module: dropscope.drops.drop_capture
author:
  - dropscope maintainers (@dropscope)
"""

EXAMPLES = r"""
- name: Snapshot drop counters before a capture
  dropscope.drops.drop_counters:
  register: before

- name: Snapshot without ethtool (faster on hosts with hundreds of interfaces)
  dropscope.drops.drop_counters:
    ethtool: false
  register: after

- name: Show UDP packets that found no socket
  ansible.builtin.debug:
    msg: "{{ after.snapshot.protocols.UdpNoPorts - before.snapshot.protocols.UdpNoPorts }}"
"""

RETURN = r"""
snapshot:
  description: One reading of every drop counter (see docs/run-format.md for the full layout).
  returned: always
  type: dict
  contains:
    schema_version:
      description: Version of this layout.
      type: int
      sample: 1
    system:
      description: Host name, kernel release, boot_id and the network namespace inode the counters belong to.
      type: dict
      sample: {"hostname": "h1", "kernel_release": "6.18.44", "boot_id": "0d6c1c7e-…", "netns_inode": 4026531840}
    time:
      description: Wall-clock and monotonic time of the reading, in seconds.
      type: dict
      sample: {"wall": 1795748401.25, "monotonic": 10234.5}
    interfaces:
      description: Per interface, kernel statistics, ethtool counters, whether ethtool had any, and the driver (C(ethtool -i)).
      type: dict
      sample: {"eth0": {"statistics": {"rx_dropped": 0}, "ethtool": {"rx_queue_0_xdp_drops": 0}, "ethtool_status": "ok",
                        "driver": {"driver": "virtio_net", "version": "1.0.0", "firmware_version": null, "bus_info": "0000:00:03.0"}}}
    protocols:
      description: Protocol counters under nstat names.
      type: dict
      sample: {"UdpNoPorts": 300, "TcpExtListenOverflows": 0}
    softnet:
      description: Per-CPU softnet statistics.
      type: list
      elements: dict
      sample: [{"cpu": 0, "processed": 13, "dropped": 0, "time_squeeze": 0}]
    qdiscs:
      description: >-
        Queueing disciplines by "device kind handle" with their drop counters (C(tc -s -j qdisc show); where tc has no
        C(-j) or prints broken JSON, C(tc -s qdisc show) too, noted in errors).
      type: dict
      sample: {"eth0 tbf 8001:": {"dropped": 180, "overlimits": 0, "backlog": 0}}
    sockets:
      description: UDP sockets whose drop counter is not zero (at most 200).
      type: list
      elements: dict
      sample: [{"proto": "udp", "local_address": "0.0.0.0", "local_port": 9100, "inode": 1234, "drops": 7}]
    firewall:
      description: >-
        nftables rules that have a counter (keys C(nft FAMILY TABLE CHAIN #HANDLE)) and iptables-legacy / ip6tables-legacy
        rules and built-in chain policies (keys C(iptables TABLE CHAIN #N), C(iptables TABLE CHAIN policy), C(ip6tables ...)).
      type: dict
      sample: {"nft inet filter input #3": {"rule": "udp dport 8000 drop", "packets": 500, "bytes": 14000}}
    conntrack:
      description: >-
        Connection tracking statistics summed over CPUs and the table's count, max and buckets; null where the
        nf_conntrack module is not loaded (it is never loaded by reading).
      type: dict
      sample: {"stat": {"entries": 6, "invalid": 8, "drop": 0, "early_drop": 0, "insert_failed": 0, "cpus": 2},
               "count": 6, "max": 262144, "buckets": 65536}
    errors:
      description: Sources that could not be read, each with the error.
      type: list
      elements: dict
      sample: [{"source": "nft -a list ruleset", "error": "exit 1: Operation not permitted"}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import HostReader, collect_snapshot


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ethtool=dict(type="bool", default=True),
            firewall=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    snapshot = collect_snapshot(HostReader.for_module(module), ethtool=module.params["ethtool"],
                                firewall=module.params["firewall"])
    module.exit_json(changed=False, snapshot=snapshot)


if __name__ == "__main__":
    main()
