# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Recorded real outputs for the parser tests: tests/data/ at the repository root (sources in its README)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os


def recorded(name):
    """Text of a recorded sample in tests/data/ (the repository root holds pyproject.toml)."""
    here = os.path.dirname(os.path.abspath(__file__))
    while not os.path.exists(os.path.join(here, "pyproject.toml")):
        parent = os.path.dirname(here)
        if parent == here:
            raise RuntimeError("no pyproject.toml above %s" % __file__)
        here = parent
    with open(os.path.join(here, "tests", "data", name), "r", encoding="utf-8") as handle:
        return handle.read()
