#!/usr/bin/env python3
"""The pandas baseline of `tenantry bench pipeline`.

Runs the same validation (the contract-clause schema) and the same transformation as the
benchmark manifest, on the same Parquet file, the way a data team writes it today with pandas,
and prints one JSON line: seconds end to end (read, validate, transform, write), rows, error
rows, output rows. Installs pandas and pyarrow with pip when they are missing.
"""
import json
import subprocess
import sys
import time


def ensure_pandas():
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "pandas", "pyarrow"]
        if subprocess.call(cmd, stdout=sys.stderr) != 0:
            subprocess.check_call(cmd + ["--break-system-packages"], stdout=sys.stderr)


LABELS = [
    "governing_law", "termination", "confidentiality", "indemnification",
    "limitation_of_liability", "payment_terms", "intellectual_property", "force_majeure",
    "warranty", "assignment",
]


def run(source, out_dir):
    import pandas as pd

    started = time.perf_counter()
    frame = pd.read_parquet(source)
    rows = len(frame)

    # Validation: one boolean Series per rule, as in the schema.
    checks = {}
    clause_id = frame["clause_id"]
    checks[("clause_id", "not_null")] = clause_id.isna()
    checks[("clause_id", "regex")] = clause_id.notna() & ~clause_id.str.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}").fillna(True)
    checks[("clause_id", "unique")] = clause_id.notna() & clause_id.duplicated(keep=False)
    contract = frame["contract_id"]
    checks[("contract_id", "not_null")] = contract.isna()
    contract_len = contract.str.len()
    checks[("contract_id", "min_length")] = (contract_len < 1).fillna(False)
    checks[("contract_id", "max_length")] = (contract_len > 64).fillna(False)
    text = frame["text"]
    text_len = text.str.len()
    checks[("text", "not_null")] = text.isna()
    checks[("text", "min_length")] = (text_len < 10).fillna(False)
    checks[("text", "max_length")] = (text_len > 5000).fillna(False)
    label = frame["label"]
    checks[("label", "allowed")] = label.notna() & ~label.isin(LABELS)
    page = frame["page"]
    checks[("page", "min")] = (page < 1).fillna(False)
    checks[("page", "max")] = (page > 1000).fillna(False)

    any_error = pd.Series(False, index=frame.index)
    reports = []
    for (column, rule), violated in checks.items():
        violated = violated.astype(bool)
        any_error |= violated
        hits = frame.index[violated]
        if len(hits):
            reports.append(pd.DataFrame({
                "row": hits.astype("uint64"),
                "column": column,
                "rule": rule,
                "value": frame.loc[hits, column].astype("string"),
            }))
    errors = pd.concat(reports, ignore_index=True) if reports else pd.DataFrame(
        {"row": [], "column": [], "rule": [], "value": []})
    valid = frame[~any_error]
    error_rows = int(any_error.sum())

    # Transformation: the benchmark manifest's ops, in order.
    valid = valid.copy()
    valid["text"] = (valid["text"].str.normalize("NFKC")
                     .str.replace(r"\s+", " ", regex=True)
                     .str.strip())
    valid["text_length"] = valid["text"].str.len()
    valid = valid[(valid["text_length"] >= 20) & valid["label"].notna()]
    valid["label"] = valid["label"].replace({
        "limitation_of_liability": "liability",
        "indemnification": "liability",
    })
    valid = valid.drop_duplicates(subset=["contract_id", "text"], keep="first")
    valid = valid[["clause_id", "contract_id", "text", "label", "text_length"]]

    valid.to_parquet(f"{out_dir}/data.parquet", compression="zstd", index=False)
    errors.to_parquet(f"{out_dir}/errors.parquet", compression="zstd", index=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": rows, "error_rows": error_rows,
            "rows_out": len(valid), "pandas": pd.__version__}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bench_pipeline_pandas.py SOURCE.parquet OUT_DIR")
    ensure_pandas()
    print(json.dumps(run(sys.argv[1], sys.argv[2])))


if __name__ == "__main__":
    main()
