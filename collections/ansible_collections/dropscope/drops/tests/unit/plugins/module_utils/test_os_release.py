# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The snapshot's `system.distro`: os-release's PRETTY_NAME, read from /etc (then /usr/lib), None without one."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import (
    os_release_pretty_name,
    read_distro,
    read_system,
)
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import FakeReader, recorded


def test_pretty_name_of_this_machines_os_release():
    assert os_release_pretty_name(recorded("os_release_debian12.txt")) == "Debian GNU/Linux 12 (bookworm)"


def test_quotes_and_shell_escapes_are_removed():
    # os-release(5): values may be quoted with " or ' and, inside double quotes, \ escapes \ " $ `.
    assert os_release_pretty_name('PRETTY_NAME="A \\"b\\" \\$c \\\\ d"\n') == 'A "b" $c \\ d'
    assert os_release_pretty_name("PRETTY_NAME='Rocky Linux 9.4 (Blue Onyx)'\n") == "Rocky Linux 9.4 (Blue Onyx)"
    assert os_release_pretty_name("PRETTY_NAME=Alpine\n") == "Alpine"


def test_no_pretty_name_or_an_empty_one_is_none():
    assert os_release_pretty_name('NAME="Debian GNU/Linux"\nID=debian\n') is None
    assert os_release_pretty_name('PRETTY_NAME=""\n') is None


def test_etc_first_then_usr_lib_then_none():
    etc = recorded("os_release_debian12.txt")
    usr_lib = 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\n'
    both = FakeReader({"/etc/os-release": etc, "/usr/lib/os-release": usr_lib}, {}, {})
    assert read_distro(both) == "Debian GNU/Linux 12 (bookworm)"
    assert read_distro(FakeReader({"/usr/lib/os-release": usr_lib}, {}, {})) == "Ubuntu 22.04.4 LTS"
    assert read_distro(FakeReader({}, {}, {})) is None
    assert read_system(FakeReader({}, {}, {}))["distro"] is None
    assert read_system(FakeReader({"/etc/os-release": etc}, {}, {}))["distro"] == "Debian GNU/Linux 12 (bookworm)"
