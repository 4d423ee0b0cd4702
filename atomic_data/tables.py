"""Fast text-table writing: a literal header, then pyarrow writes the body."""

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv


def write_table(path, header, columns, sep="\t"):
    """Write columns (same length) under header; values must not contain sep."""
    table = pa.table({str(i): pa.array(np.asarray(c)) for i, c in enumerate(columns)})
    with open(path, "wb") as f:
        f.write((sep.join(header) + "\n").encode())
        options = pa_csv.WriteOptions(include_header=False, delimiter=sep, quoting_style="none")
        pa_csv.write_csv(table, f, options)
