#!/usr/bin/env python3
"""Baton's bounce parser next to flufl.bounce on the same files (issue 9).

Run through bench/bounce-compare.sh, which installs flufl.bounce into .venv-bench and
produces Baton's JSON lines. Usage:

    bounce_compare.py --baton-json FILE [--corpora DIR] [--all]

FILE holds one JSON object per message as `baton bounce parse` prints it ({"file",
"is_bounce", "kind", "recipients": [...]}, or {"file", "error"}). flufl.bounce runs here,
in-process, on the bytes of the same files: `all_failures()` gives its temporary and
permanent sets (`scan_message()` is the permanent set alone).

What is compared, per corpus (addresses compared lower-cased):
  * failed set: Baton's recipients of a `dsn` report (failed or delayed; complaints and
    auto-replies are not failures) vs flufl's temporary | permanent.
  * hard/soft split: Baton's hard set vs flufl's permanent set and soft vs temporary.
  * each parser vs the label CSVs, read as crates/baton-bounce/tests/corpus.rs reads them:
    recipients (exact set), hard/soft of the labelled recipients (flufl: permanent = hard,
    temporary = soft), is_bounce (flufl: any failed recipient).
Labels record what each project's own tests expect; they are not ground truth.
"""

import argparse
import csv
import email
import json
import logging
import sys
import traceback
from importlib import metadata
from pathlib import Path

import flufl.bounce

CORPORA = {
    "flufl-bounce": ("flufl-bounce.labels.csv", ".txt"),
    "mail-deliverystatus-bounceparser": ("mail-deliverystatus-bounceparser.labels.csv", ".msg"),
}


class DetectorLog(logging.Handler):
    """Remembers which flufl detector raised (flufl logs it before re-raising)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.last = None

    def emit(self, record):
        if record.args:
            self.last = getattr(record.args[0], "__name__", str(record.args[0]))


def address_set(cell):
    return frozenset(a.lower() for a in cell.split())


def flufl_labels(path):
    """file -> {"is_bounce", "recipients", "class"} (only what is labelled)."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            want = out.setdefault(row["file"], {})
            found = address_set(row["recipients"])
            if not found:
                # A negative check of one detector; another row names the addresses.
                continue
            want["is_bounce"] = True
            want["recipients"] = want.get("recipients", frozenset()) | found
            want["class"] = "soft" if row["temporary"] == "yes" else "hard"
    return out


def perl_labels(path):
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            notes = row["notes"]
            want = {}
            if row["is_bounce"] in ("0", "1"):
                want["is_bounce"] = row["is_bounce"] == "1"
            found = address_set(row["recipients"])
            if found:
                want["recipients"] = found
            elif "reports=0" in notes:
                want["recipients"] = frozenset()
            status = next(
                (n.strip()[7:] for n in notes.split(";") if n.strip().startswith("status=")),
                None,
            )
            std_reason = "" if "todo:std_reason" in notes else row["std_reason"]
            digit = row["smtp_code"][:1] or (status or "")[:1]
            if digit in ("4", "5"):
                want["class"] = "hard" if digit == "5" else "soft"
            elif std_reason in ("user_unknown", "user_disabled", "domain_error"):
                want["class"] = "hard"
            out[row["file"]] = want
    return out


def baton_result(report):
    """(is_bounce, failed, hard, soft) from one JSON report; None if Baton errored."""
    if "error" in report:
        return None
    failed, hard, soft = set(), set(), set()
    if report.get("kind") == "dsn":
        for r in report.get("recipients", []):
            address = r["address"].lower()
            failed.add(address)
            (hard if r.get("class") == "hard" else soft).add(address)
    return report.get("is_bounce", False), frozenset(failed), frozenset(hard), frozenset(soft)


def flufl_result(raw, detectors):
    """(is_bounce, failed, hard, soft) from flufl.bounce, or the exception it raised."""
    msg = email.message_from_bytes(raw)
    detectors.last = None
    try:
        temporary, permanent = flufl.bounce.all_failures(msg)
    except Exception as exc:  # noqa: BLE001 - counted and reported per file
        where = detectors.last or "?"
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return f"{type(exc).__name__} in {where} ({Path(frame.filename).name}:{frame.lineno}): {exc}"

    def decode(addresses):
        return frozenset(a.decode("ascii", "replace").lower() for a in addresses)

    hard, soft = decode(permanent), decode(temporary)
    failed = hard | soft
    return bool(failed), failed, hard, soft


class Tally:
    def __init__(self):
        self.agree = 0
        self.labelled = 0

    def add(self, agrees):
        self.labelled += 1
        self.agree += bool(agrees)

    def cell(self):
        if not self.labelled:
            return "-"
        return f"{self.agree}/{self.labelled} {100.0 * self.agree / self.labelled:5.1f}%"


def label_checks(result, want, tallies):
    """Scores one parser's result against one file's labels; returns what disagreed."""
    is_bounce, failed, hard, soft = result
    wrong = []
    if "is_bounce" in want:
        tallies["is_bounce"].add(is_bounce == want["is_bounce"])
        if is_bounce != want["is_bounce"]:
            wrong.append("is_bounce")
    if "recipients" in want:
        tallies["recipients"].add(failed == want["recipients"])
        if failed != want["recipients"]:
            wrong.append("recipients")
    if "class" in want:
        subject = want.get("recipients") or failed
        classes = {"hard" if a in hard else "soft" for a in subject if a in failed}
        agrees = classes == {want["class"]}
        tallies["class"].add(agrees)
        if not agrees:
            wrong.append("hard/soft")
    return wrong


def show(addresses, width=46):
    text = " ".join(sorted(addresses)) or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def compare(name, corpora, baton_reports, detectors, show_all):
    label_file, suffix = CORPORA[name]
    labels = (flufl_labels if name == "flufl-bounce" else perl_labels)(corpora / label_file)
    files = sorted(p for p in (corpora / name).iterdir() if p.name.endswith(suffix))
    names = ("is_bounce", "recipients", "class")
    tallies = {side: {n: Tally() for n in names} for side in ("baton", "flufl")}
    errors = {"baton": [], "flufl": []}
    bounced = {"baton": 0, "flufl": 0}
    same_failed, same_split, both_found, compared = 0, 0, 0, 0
    disagreements = []
    for path in files:
        report = baton_reports.get(str(path.resolve()))
        if report is None:
            baton = None
            errors["baton"].append((path.name, "no output for this file"))
        else:
            baton = baton_result(report)
            if baton is None:
                errors["baton"].append((path.name, report["error"]))
        flufl = flufl_result(path.read_bytes(), detectors)
        if isinstance(flufl, str):
            errors["flufl"].append((path.name, flufl))
            flufl = None
        want = labels.get(path.name, {})
        wrong = {}
        for side, result in (("baton", baton), ("flufl", flufl)):
            if result is None:
                continue
            bounced[side] += bool(result[1])
            wrong[side] = label_checks(result, want, tallies[side])
        if baton is None or flufl is None:
            disagreements.append((path.name, baton, flufl, want, wrong))
            continue
        compared += 1
        same = baton[1] == flufl[1]
        same_failed += same
        both_found += same and bool(baton[1])
        split = baton[2] == flufl[2] and baton[3] == flufl[3]
        same_split += split
        if not same or not split or show_all:
            disagreements.append((path.name, baton, flufl, want, wrong))

    version = metadata.version("flufl.bounce")
    print(f"== {name}: {len(files)} files, {sum(1 for f in files if f.name in labels)} labelled")
    rows = [
        ("parse errors / exceptions", len(errors["baton"]), len(errors["flufl"])),
        ("files with failed recipients", bounced["baton"], bounced["flufl"]),
        ("vs labels: is_bounce", tallies["baton"]["is_bounce"].cell(), tallies["flufl"]["is_bounce"].cell()),
        ("vs labels: recipients", tallies["baton"]["recipients"].cell(), tallies["flufl"]["recipients"].cell()),
        ("vs labels: hard/soft", tallies["baton"]["class"].cell(), tallies["flufl"]["class"].cell()),
    ]
    print(f"  {'':<30} {'Baton':<18} flufl.bounce {version}")
    for label, ours, theirs in rows:
        print(f"  {label:<30} {str(ours):<18} {theirs}")
    pct = (lambda n: f"{100.0 * n / compared:5.1f}%") if compared else (lambda n: "-")
    print(f"  Baton vs flufl, {compared} files both parsed:")
    print(f"    same failed-recipient set     {same_failed}/{compared} {pct(same_failed)}"
          f"  ({both_found} non-empty, {same_failed - both_found} both empty)")
    print(f"    same hard|permanent and soft|temporary sets  {same_split}/{compared} {pct(same_split)}")
    for side, title in (("baton", "Baton errors"), ("flufl", "flufl.bounce exceptions")):
        for file, what in errors[side]:
            print(f"  {title}: {file}: {what}")
    if disagreements:
        print(f"  {'files where they differ (failed set, or its hard/soft split)' if not show_all else 'all files'}:")
        print("    (s:N / temp:N = how many are soft / temporary; [..] = disagrees with the labels)")
        lines = []
        for file, baton, flufl, want, wrong in disagreements:
            cells = []
            for side, result in (("baton", baton), ("flufl", flufl)):
                if result is None:
                    cells.append("ERROR")
                    continue
                _, failed, hard, soft = result
                text = show(failed)
                if soft:
                    text += f" (s:{len(soft)})" if side == "baton" else f" (temp:{len(soft)})"
                if wrong.get(side):
                    text += f" [{','.join(wrong[side])}]"
                cells.append(text)
            labelled = want.get("recipients")
            cells.append(show(labelled, 40) if labelled is not None else "-")
            lines.append((file, *cells))
        widths = [max(len(line[i]) for line in lines + [("file", "Baton", "flufl.bounce")]) for i in range(3)]
        for line in [("file", "Baton", "flufl.bounce", "labels")] + lines:
            print("    " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[3])
    print()


def main():
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baton-json", required=True, type=Path)
    parser.add_argument("--corpora", type=Path, default=here / "crates/baton-bounce/tests/corpora")
    parser.add_argument("--all", action="store_true", help="list every file, not only disagreements")
    args = parser.parse_args()

    baton_reports = {}
    for line in args.baton_json.read_text().splitlines():
        if line.strip():
            report = json.loads(line)
            baton_reports[str(Path(report["file"]).resolve())] = report

    detectors = DetectorLog()
    log = logging.getLogger("flufl.bounce")
    log.addHandler(detectors)
    log.propagate = False  # flufl logs a full traceback per exception; we print one line
    for name in CORPORA:
        compare(name, args.corpora.resolve(), baton_reports, detectors, args.all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
