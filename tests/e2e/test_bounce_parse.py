"""`baton bounce parse FILE...`: one JSON object per file, over the bundled bounce corpora."""

import json
import subprocess

from conftest import BATON, REPO

CORPORA = REPO / "crates" / "baton-bounce" / "tests" / "corpora"


def parse(*args, env=None):
    return subprocess.run([BATON, "bounce", "parse", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_every_corpus_file_gets_one_report_in_order(tmp_path):
    files = sorted(p for p in CORPORA.glob("*/*") if p.is_file())
    assert len(files) > 200
    # Thousands of files in one call: the corpus twenty times over.
    many = files * 20
    r = parse(*many)
    assert r.returncode == 0, r.stderr
    reports = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rep["file"] for rep in reports] == [str(f) for f in many]
    assert all(set(rep) == {"file", "is_bounce", "kind", "recipients"} for rep in reports)
    for rep in reports:
        for rcpt in rep["recipients"]:
            assert set(rcpt) == {"address", "action", "status", "reply_code", "diagnostic",
                                 "remote_mta", "class", "reason"}, rcpt
            assert rcpt["class"] in ("hard", "soft"), rcpt
    kinds = {rep["kind"] for rep in reports}
    assert {"dsn", "autoreply", "unknown"} <= kinds, kinds


def test_a_dsn_an_autoreply_and_a_missing_file(tmp_path):
    dsn = CORPORA / "flufl-bounce" / "dsn_01.txt"
    vacation = CORPORA / "mail-deliverystatus-bounceparser" / "aol-vacation.msg"
    r = parse(dsn, vacation, tmp_path / "missing.eml")
    assert r.returncode == 1 and "1 of 3 files could not be parsed" in r.stderr, r.stderr
    first, second, third = (json.loads(line) for line in r.stdout.splitlines())
    assert (first["is_bounce"], first["kind"]) == (True, "dsn")
    [rcpt] = first["recipients"]
    assert (rcpt["address"], rcpt["status"], rcpt["class"]) == ("JimmyMcEgypt@go.com", "5.0.0", "hard")
    assert (second["is_bounce"], second["kind"]) == (False, "autoreply")
    assert third["file"].endswith("missing.eml") and "No such file" in third["error"]


def test_operator_rules_override_the_built_in_ones(tmp_path):
    dsn = CORPORA / "flufl-bounce" / "dsn_01.txt"
    before = json.loads(parse(dsn).stdout)["recipients"][0]
    rules = tmp_path / "rules.toml"
    rules.write_text('[[status]]\ncode = "5.0.0"\nreason = "policy_block"\nclass = "soft"\n')
    after = json.loads(parse("--rules", rules, dsn).stdout)["recipients"][0]
    assert (before["reason"], before["class"]) != ("policy_block", "soft"), before
    assert (after["reason"], after["class"]) == ("policy_block", "soft"), after
    rules.write_text('[[status]]\ncode = "5.0.0"\nreason = "no_such_reason"\n')
    bad = parse("--rules", rules, dsn)
    assert bad.returncode == 1 and bad.stderr.startswith("baton: bounce rules ") and "\n" == bad.stderr[-1:], bad.stderr
