"""The run log: one JSON line per result in `<output_dir>/pulse_log.jsonl`."""
import json
import sys

from files import append_line

LOG_NAME = "pulse_log.jsonl"


def append(log_path, record):
    append_line(log_path, json.dumps(record))


def read(log_path):
    """All records of a log; a damaged line (say, from a killed process) is skipped with a warning."""
    if not log_path.exists():
        return []
    records = []
    for number, line in enumerate(log_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"warning: {log_path}:{number} is not a JSON line, ignored", file=sys.stderr)
    return records


def latest_by_output(records):
    """{output path: its last record}: a rerun overwrites the image, so the last record describes it."""
    return {record["output"]: record for record in records if record.get("output")}
