"""The bpftrace program reads the kernel's structs by the offsets kernel_btf finds in this kernel's BTF.

Real kernel, real bpftrace: one program reads every field both ways (struct casts, which bpftrace resolves
itself through BTF and clang, and the byte offsets) for each of 200 real drops, and counts the pairs; every
pair must agree, and the netns read must be the test namespace's inode.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

from ansible_collections.dropscope.drops.plugins.module_utils import bpftrace_capture as bt

DROPS = 200


# The program reads skb->dev and skb->sk once, into $dev and $sk; here each way has its own variables.
STRUCT_NAMES = {"$skb": "$s", "$dev": "$sdev", "$sk": "$ssk"}
OFFSET_NAMES = {"$skb": "$o", "$dev": "$odev", "$sk": "$osk"}


def _renamed(read: str, names: dict[str, str]) -> str:
    for variable in sorted(names, key=len, reverse=True):  # $skb before $sk
        read = read.replace(variable, names[variable])
    return read


def _both_ways() -> str:
    """A program keying each drop by (struct read, offset read) of the netns and of the port-bearing header."""
    offsets, why = bt.struct_offsets()
    assert why is None, why
    by_offset = {name: expression % offsets for name, expression in bt.OFFSET_READS.items()}
    pairs = [
        f"(uint64)({_renamed(bt.STRUCT_READS[name], STRUCT_NAMES)}), "
        f"(uint64)({_renamed(by_offset[name], OFFSET_NAMES)})"
        for name in ("SKB_DEV", "NS_OF_DEV", "SKB_SK", "NS_OF_SK", "NETWORK_HEADER")
    ]
    return (
        'BEGIN { printf("READY\\n"); }\n'
        "tracepoint:skb:kfree_skb {\n"
        "  $s = (struct sk_buff *)args->skbaddr;\n"
        "  $o = (uint64)args->skbaddr;\n"
        f"  $sdev = {_renamed(bt.STRUCT_READS['SKB_DEV'], STRUCT_NAMES)};\n"
        f"  $ssk = {_renamed(bt.STRUCT_READS['SKB_SK'], STRUCT_NAMES)};\n"
        f"  $odev = {_renamed(by_offset['SKB_DEV'], OFFSET_NAMES)};\n"
        f"  $osk = {_renamed(by_offset['SKB_SK'], OFFSET_NAMES)};\n"
        f"  @pairs[{', '.join(pairs)}] = count();\n"
        "}\n"
    )


def test_offsets_read_what_struct_casts_read(tmp_path, tracefs):
    program = tmp_path / "both.bt"
    program.write_text(_both_ways())
    namespace = f"dsbtf{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        inode = os.stat(f"/run/netns/{namespace}").st_ino
        proc = subprocess.Popen(["bpftrace", "-f", "json", str(program)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stdout:  # {"type": "attached_probes", …} comes first
                if json.loads(line)["data"] == "READY\n":
                    break
            # 200 UDP datagrams to a closed port on the namespace's loopback: 200 NO_SOCKET drops, bounded.
            sender = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                      f"for i in range({DROPS}):\n    s.sendto(b'x', ('127.0.0.1', 9))\n")
            subprocess.run(["ip", "netns", "exec", namespace, "python3", "-c", sender], check=True, timeout=30)
            time.sleep(0.5)
        finally:
            proc.send_signal(2)
            out, err = proc.communicate(timeout=30)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=True)
    maps = [json.loads(line)["data"]["@pairs"] for line in out.splitlines()
            if line.startswith('{"type": "map"')]
    assert maps, err
    ours = 0
    for key, count in maps[0].items():
        values = [int(word) for word in key.split(",")]
        struct_reads, offset_reads = values[0::2], values[1::2]
        assert struct_reads == offset_reads, (key, err)
        if struct_reads[1] == inode:  # NS_OF_DEV: the drops in the test namespace
            ours += count
    # Every drop in the test namespace was read alike both ways; together they are the 200 sent.
    assert ours == DROPS, maps[0]


def test_the_capture_program_starts_without_struct_casts(tmp_path, tracefs):
    """The program a capture runs here uses offsets only: no struct cast for bpftrace to compile."""
    offsets, why = bt.struct_offsets()
    assert why is None
    text = bt.program_text(4026531840, 9000, offsets=offsets, peers="exact", deadline_s=2)
    assert "struct" not in text and "->dev" not in text
    program = tmp_path / "drops.bt"
    program.write_text(text)
    proc = subprocess.run(["bpftrace", "-f", "json", str(program)], capture_output=True, text=True, timeout=60)
    printed = [json.loads(line)["data"].strip() for line in proc.stdout.splitlines()
               if line.startswith('{"type": "printf"')]
    assert proc.returncode == 0 and printed[0] == "READY" and "END" in printed, proc.stderr
