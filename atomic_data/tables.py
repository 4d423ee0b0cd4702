"""Text tables: writing them (a literal header, values verbatim, no quoting), reading atomic .inter files.

Numeric tables (the millions of interactions) go through pyarrow's CSV
writer, the fast path. Text tables (side files, .item: thousands of rows)
are joined in Python, because pyarrow refuses unquoted values with a ``"``
and real titles have them (``11'09"01 - September 11 (2002)``).
"""

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from atomic_data.raw import RawDataError


def write_table(path, header, columns, sep="\t"):
    """Write equally long columns under header; no value may contain sep."""
    arrays = [np.asarray(c) for c in columns]
    with open(path, "wb") as f:
        f.write((sep.join(header) + "\n").encode())
        if all(np.issubdtype(a.dtype, np.number) for a in arrays):
            table = pa.table({str(i): a for i, a in enumerate(arrays)})
            options = pa_csv.WriteOptions(include_header=False, delimiter=sep, quoting_style="none")
            pa_csv.write_csv(table, f, options)
            return
        rows = zip(*(a.astype(str) for a in arrays))
        lines = [sep.join(row) for row in rows]
        for line in lines:
            if line.count(sep) != len(header) - 1 or "\n" in line:
                raise ValueError(f"{path}: a value contains the separator or a newline: {line!r}")
        f.write(("\n".join(lines) + "\n").encode() if lines else b"")


def read_inter(path):
    """An atomic .inter file written by atomic_data as int64 arrays user, item, time."""
    try:
        table = pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(delimiter="\t"),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(("user_id:token", "item_id:token", "timestamp:float"), pa.int64())
            ),
        )
    except pa.ArrowInvalid as error:  # a prepared file edited by hand
        raise RawDataError(f"{path}: not an .inter file written by atomic_data: {error}") from None
    return tuple(table.column(i).to_numpy() for i in range(3))
