"""Read and check the competition's raw files.

Every problem a user can cause ends in one ``RawDataError`` naming the file,
the line (1-based, the header is line 1) and what was expected. The fast
path parses with pandas' C reader; only when it refuses a file do we scan the
file line by line to say where and why. Text is UTF-8; a side file that is
not (real exports are often Windows' cp1252 or Latin-1) is read as cp1252,
with one warning.
"""

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

logger = logging.getLogger(__name__)

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
SINGLE_VALUED = {"titles.tsv", "years.tsv"}  # one value per item; the others list several
UNITS = {"time": " (Unix seconds)"}  # what an integer column counts, for messages
SECONDS_LIMIT = 10**11  # Unix seconds of the year 5138: larger times are not seconds (milliseconds are from 1973 on)
SECONDS_PER_YEAR = 31_556_952  # the mean Gregorian year
FALLBACK_ENCODING = "cp1252"  # Windows Western European: Latin-1's letters plus quotes, dashes, the euro


class RawDataError(ValueError):
    """A raw competition file is missing or malformed."""


def read_ratings(raw_dir):
    """``train_ratings.csv`` as int64 arrays {user, item, time}, in file order."""
    path = Path(raw_dir) / RATINGS_FILE
    require_file(path)
    _check_header(path, ",", RATINGS_COLUMNS)
    try:  # pyarrow: multi-threaded, the largest file by far
        table = pa_csv.read_csv(
            path, convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(RATINGS_COLUMNS, pa.int64()))
        )
        if table.column_names != list(RATINGS_COLUMNS) or any(c.null_count for c in table.columns):
            raise ValueError("missing values")
        columns = {name: table.column(name).to_numpy() for name in RATINGS_COLUMNS}
        if any(values.min(initial=0) < 0 for values in columns.values()):
            raise ValueError("negative values")
    except (ValueError, pa.ArrowInvalid) as error:
        _raise_first_bad_line(path, ",", RATINGS_COLUMNS, RATINGS_COLUMNS, "utf-8-sig")
        raise RawDataError(f"{path}: cannot be parsed: {error}") from error
    if table.num_rows == 0:
        raise RawDataError(f"{path}: no interactions after the header")
    _check_time_unit(path, columns["time"])
    return columns


def _check_time_unit(path, times):
    """Times in milliseconds are used as they are, with a warning (only their order matters); a mix of seconds and
    milliseconds, which would misorder them, is refused. Lines are counted as rows + 2 (the header; no blank lines)."""
    large = times >= SECONDS_LIMIT
    if not large.any():
        return
    first = int(np.argmax(large))
    if not large.all():
        small = int(np.argmin(large))
        raise RawDataError(
            f"{path}:{first + 2}: time {times[first]} is not in Unix seconds (milliseconds?), unlike line "
            f"{small + 2}'s {times[small]}: every row needs the same unit"
        )
    latest = int(np.argmax(times))
    logger.warning(
        "%s: times look like milliseconds, not Unix seconds (line %d: %d would be the year %s); used as they are: "
        "only their order matters",
        path,
        latest + 2,
        times[latest],
        f"{1970 + int(times[latest]) // SECONDS_PER_YEAR:,}",
    )


def read_side_file(raw_dir, filename):
    """One side file as (item int64, value str), or None when it is absent."""
    path = Path(raw_dir) / filename
    if not path.exists():
        return None
    require_file(path)
    encoding = _text_encoding(path)
    column = SIDE_FILES[filename]
    columns = ("item", column)
    _check_header(path, "\t", columns, encoding)
    integer_columns = ("item", column) if column in INTEGER_SIDE_COLUMNS else ("item",)
    try:
        frame = pd.read_csv(
            path,
            sep="\t",
            dtype={"item": np.int64, column: np.int64 if column in INTEGER_SIDE_COLUMNS else str},
            engine="c",
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            encoding=encoding,
        )
        if (frame[column].astype(str).str.strip() == "").any():
            raise ValueError("empty value")
        if any((frame[name] < 0).any() for name in integer_columns):
            raise ValueError("negative values")
    except (ValueError, OverflowError, pd.errors.ParserError) as error:
        _raise_first_bad_line(path, "\t", columns, integer_columns, encoding)
        raise RawDataError(f"{path}: cannot be parsed: {error}") from error
    if frame.empty:
        raise RawDataError(f"{path}: no rows after the header")
    if filename in SINGLE_VALUED:
        _warn_conflicts(path, frame, column)
    return frame


def _warn_conflicts(path, frame, column):
    """An item's first row is its value (atomic_data.items); later rows that say otherwise get one warning."""
    first_rows = frame.drop_duplicates("item").reset_index().set_index("item")
    later = frame[frame.duplicated("item")]
    conflicting = later[later[column].to_numpy() != first_rows.loc[later["item"], column].to_numpy()]
    if len(conflicting):
        row, item, value = conflicting.index[0], *conflicting.iloc[0].tolist()
        first_row, first_value = first_rows.loc[item, ["index", column]].tolist()
        logger.warning(
            "%s:%d: item %d again, with %s %r; line %d said %r: an item's first row is used (%d such rows)",
            path,
            row + 2,  # the header is line 1 (blank lines are not counted)
            item,
            column,
            value,
            first_row + 2,
            first_value,
            len(conflicting),
        )


def require_file(path):
    if path.is_dir():
        raise RawDataError(f"{path}: is a folder, expected a file")
    if not path.is_file():
        raise RawDataError(f"{path}: required file is missing")


def _text_encoding(path):
    """UTF-8 (with or without a byte-order mark), else cp1252 with a warning; a byte neither explains is an error."""
    data = path.read_bytes()  # side files are small
    try:
        data.decode("utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError as error:
        first = error.start
    try:
        data.decode(FALLBACK_ENCODING)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise RawDataError(
            f"{path}:{line}: byte 0x{data[error.start]:02x} is neither UTF-8 nor {FALLBACK_ENCODING} text"
        ) from None
    logger.warning(
        "%s: not UTF-8 (line %d, byte 0x%02x); read as %s (Windows Western European, which includes Latin-1's letters)",
        path,
        data.count(b"\n", 0, first) + 1,
        data[first],
        FALLBACK_ENCODING,
    )
    return FALLBACK_ENCODING


def _check_header(path, sep, columns, encoding="utf-8-sig"):
    expected = sep.join(columns)
    with open(path, "rb") as f:
        header = f.readline()  # the first line only: the rest may be in another encoding
    if header == b"":
        raise RawDataError(f"{path}: file is empty, expected the header {expected!r}")
    header = header.decode(encoding, errors="replace").rstrip("\r\n")
    if header != expected:
        raise RawDataError(f"{path}:1: header is {header!r}, expected {expected!r}")


def _raise_first_bad_line(path, sep, columns, integer_columns, encoding):
    shown_sep = "<TAB>" if sep == "\t" else sep
    expected = shown_sep.join(columns)
    with open(path, "rb") as f:
        next(f)
        for number, raw_line in enumerate(f, start=2):
            try:
                line = raw_line.decode(encoding)
            except UnicodeDecodeError as error:
                raise RawDataError(f"{path}:{number}: byte 0x{raw_line[error.start]:02x} is not UTF-8 text") from None
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
                problem = _integer_problem(value) if name in integer_columns else None
                if problem:
                    raise RawDataError(
                        f"{path}:{number}: {name!r} must be {problem}{UNITS.get(name, '')}, got {value!r}"
                    )


def _integer_problem(text):
    """What an int64 column's text lacks ("a non-negative integer", ...), or None."""
    text = text.strip()
    if not text.lstrip("+-").isdigit():
        return "an integer"
    if int(text) < 0:
        return "a non-negative integer"
    if int(text) >= 2**63:
        return "an integer below 2^63"
    return None
