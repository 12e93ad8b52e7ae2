"""The rule catalogue's dispatch tables: every rule is reached from the node type it names, in catalogue
order (for one node the first matching rule wins), and every node type it names is one pglast produces."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk import rules as risk_rules
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import analyse_sql


def _dispatched(rule: risk_rules.Rule):
    """The list the engine tries for a node of the rule's type."""
    if rule.node == risk_rules.ALTER_TABLE_CMD + "*":
        return risk_rules.RULES_ANY_SUBTYPE
    if rule.node.startswith(risk_rules.ALTER_TABLE_CMD):
        return risk_rules.RULES_BY_SUBTYPE[rule.node[len(risk_rules.ALTER_TABLE_CMD):]]
    return risk_rules.RULES_BY_NODE[rule.node]


@pytest.mark.parametrize("rule", risk_rules.RULES, ids=lambda rule: rule.id)
def test_every_rule_is_reachable_from_its_node_type(rule):
    assert rule in _dispatched(rule)


def test_dispatch_keeps_catalogue_order():
    for rules in list(risk_rules.RULES_BY_NODE.values()) + list(risk_rules.RULES_BY_SUBTYPE.values()):
        positions = [risk_rules.RULES.index(rule) for rule in rules]
        assert positions == sorted(positions)
    assert sum(len(rules) for rules in risk_rules.RULES_BY_NODE.values()) == len(risk_rules.RULES)


def test_node_types_are_pglast_node_types():
    from pglast import ast, enums
    for rule in risk_rules.RULES:
        if rule.node.startswith(risk_rules.ALTER_TABLE_CMD):
            subtype = rule.node[len(risk_rules.ALTER_TABLE_CMD):]
            assert subtype == "*" or subtype in enums.AlterTableType.__members__, rule.id
        else:
            assert isinstance(getattr(ast, rule.node, None), type), rule.id


def test_quiet_statements_have_no_rules():
    assert not set(risk_rules.QUIET_STATEMENTS) & set(risk_rules.RULES_BY_NODE)


def test_rule_ids_are_unique():
    ids = [rule.id for rule in risk_rules.RULES]
    assert len(ids) == len(set(ids))
    assert not set(ids) & set(risk_rules.MIGRATION_RULES)


def test_parser_loads_without_the_rest_of_pglast_and_the_package_completes_on_use():
    """The engine loads only pglast's parser; the deparser and AST classes still work afterwards."""
    code = (
        "import sys\n"
        "from ansible_collections.dbops.migrations.plugins.module_utils.risk import engine\n"
        "assert engine.HAS_PGLAST\n"
        "assert 'pglast.enums.nodes' not in sys.modules\n"
        "r = engine.analyse_sql('ALTER TABLE o ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES p (id)')\n"
        "assert 'NOT VALID' in r.findings[0].safe_alternative, r.findings[0].safe_alternative\n"
        "import pglast\n"
        "from pglast import ast, enums\n"
        "from pglast.stream import RawStream\n"
        "assert pglast.__version__ and pglast.parser is engine._pglast_parser\n"
        "assert RawStream()(pglast.parse_sql('select 1')) == 'SELECT 1'\n"
        "assert isinstance(ast.SelectStmt, type) and enums.ConstrType.CONSTR_FOREIGN\n"
        "try:\n"
        "    engine._pglast_parser.parse_sql_json('selec')\n"
        "except pglast.Error:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('no parse error')\n")
    collections = str(Path(__file__).resolve().parents[2] / ".collections")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [collections, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_fk_alternative_is_rendered_by_the_deparser():
    result = analyse_sql("ALTER TABLE o ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES p (id) ON DELETE CASCADE")
    assert "ON DELETE CASCADE NOT VALID" in result.findings[0].safe_alternative
