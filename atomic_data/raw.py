"""Read and check the competition's raw files.

Every problem a user can cause ends in one ``RawDataError`` naming the file,
the line (1-based, the header is line 1) and what was expected. The fast
path parses with pandas' C reader; only when it refuses a file do we scan the
file line by line to say where and why.
"""

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

RATINGS_FILE = "train_ratings.csv"
RATINGS_COLUMNS = ("user", "item", "time")
# side file -> its value column; every side file is "item<TAB>value"
SIDE_FILES = {
    "titles.tsv": "title",
    "years.tsv": "year",
    "directors.tsv": "director",
    "writers.tsv": "writer",
    "genres.tsv": "genre",
}
INTEGER_SIDE_COLUMNS = {"year"}


class RawDataError(ValueError):
    """A raw competition file is missing or malformed."""


def read_ratings(raw_dir):
    """``train_ratings.csv`` as int64 arrays {user, item, time}, in file order."""
    path = Path(raw_dir) / RATINGS_FILE
    if not path.is_file():
        raise RawDataError(f"{path}: required file is missing")
    _check_header(path, ",", RATINGS_COLUMNS)
    try:  # pyarrow: multi-threaded, the largest file by far
        table = pa_csv.read_csv(
            path, convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(RATINGS_COLUMNS, pa.int64()))
        )
        if table.column_names != list(RATINGS_COLUMNS) or any(c.null_count for c in table.columns):
            raise ValueError("missing values")
    except (ValueError, pa.ArrowInvalid) as error:
        _raise_first_bad_line(path, ",", RATINGS_COLUMNS, RATINGS_COLUMNS)
        raise RawDataError(f"{path}: cannot be parsed: {error}") from error
    if table.num_rows == 0:
        raise RawDataError(f"{path}: no interactions after the header")
    return {name: table.column(name).to_numpy() for name in RATINGS_COLUMNS}


def read_side_file(raw_dir, filename):
    """One side file as (item int64, value str), or None when it is absent."""
    path = Path(raw_dir) / filename
    if not path.is_file():
        return None
    column = SIDE_FILES[filename]
    columns = ("item", column)
    _check_header(path, "\t", columns)
    integer_columns = ("item", column) if column in INTEGER_SIDE_COLUMNS else ("item",)
    try:
        frame = pd.read_csv(
            path,
            sep="\t",
            dtype={"item": np.int64, column: np.int64 if column in INTEGER_SIDE_COLUMNS else str},
            engine="c",
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
        )
        if (frame[column].astype(str).str.strip() == "").any():
            raise ValueError("empty value")
    except (ValueError, pd.errors.ParserError) as error:
        _raise_first_bad_line(path, "\t", columns, integer_columns)
        raise RawDataError(f"{path}: cannot be parsed: {error}") from error
    if frame.empty:
        raise RawDataError(f"{path}: no rows after the header")
    return frame


def _check_header(path, sep, columns):
    expected = sep.join(columns)
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = f.readline()
    if header == "":
        raise RawDataError(f"{path}: file is empty, expected the header {expected!r}")
    header = header.rstrip("\r\n")
    if header != expected:
        raise RawDataError(f"{path}:1: header is {header!r}, expected {expected!r}")


def _raise_first_bad_line(path, sep, columns, integer_columns):
    shown_sep = "<TAB>" if sep == "\t" else sep
    expected = shown_sep.join(columns)
    with open(path, encoding="utf-8-sig", newline="") as f:
        next(f)
        for number, line in enumerate(f, start=2):
            if line.strip() == "":
                continue  # pandas skips blank lines too
            fields = line.rstrip("\r\n").split(sep)
            if len(fields) != len(columns):
                raise RawDataError(
                    f"{path}:{number}: expected {len(columns)} fields {expected!r}, "
                    f"got {len(fields)}: {line.rstrip()!r}"
                )
            for name, value in zip(columns, fields):
                if value.strip() == "":
                    raise RawDataError(f"{path}:{number}: empty {name!r} in {line.rstrip()!r}")
                if name in integer_columns and not _is_integer(value):
                    raise RawDataError(
                        f"{path}:{number}: {name!r} must be an integer, got {value!r}"
                    )


def _is_integer(text):
    text = text.strip()
    return text.lstrip("+-").isdigit()
