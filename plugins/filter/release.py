# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the end of a release: the summary, and the failure report with the rollback commands.

The logic and the texts live in module_utils/release/summary.py; each filter takes one dict of
inputs, documented in the side-car file of its name (release_summary.yml, ...).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Dict

from ansible.errors import AnsibleFilterError

from ansible_collections.dbops.migrations.plugins.module_utils.release import summary


def _takes_a_dict(name: str, func: Callable[[Mapping], Any]) -> Callable[[Any], Any]:
    """A filter that says what it wanted when it is given something other than a dict."""
    def run(inputs: Any) -> Any:
        if not isinstance(inputs, Mapping):
            raise AnsibleFilterError("%s expects a dict of inputs, got %s" % (name, type(inputs).__name__))
        return func(inputs)
    run.__name__ = name
    run.__doc__ = func.__doc__
    return run


FILTERS = {
    "release_summary": summary.release_summary,
    "release_summary_lines": summary.summary_lines,
    "release_failure_facts": summary.failure_facts,
    "release_failure_after_maintenance": summary.failure_after_maintenance,
    "release_rollback_commands": summary.rollback_commands,
    "release_failure_report": summary.failure_report,
    "release_failure_lines": summary.failure_lines,
}


class FilterModule(object):
    """dbops.migrations release filters."""

    def filters(self) -> Dict[str, Callable[[Any], Any]]:
        return {name: _takes_a_dict(name, func) for name, func in FILTERS.items()}
