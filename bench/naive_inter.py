"""The naive baseline of bench/prepare.py: the .inter file written row by row in Python.

What a one-off team script does: read train_ratings.csv row by row, sort by
user and time, drop repeated (user, item) keeping the earliest, and write
each row with f.write. Same output as movierec's <name>/<name>.inter.

    python bench/naive_inter.py RAW_DIR OUT_FILE
"""

import csv
import sys


def write_inter_row_by_row(ratings_csv, out_file):
    with open(ratings_csv, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [(int(user), int(item), int(time)) for user, item, time in reader]
    rows.sort(key=lambda row: (row[0], row[2]))  # stable: ties keep file order
    seen = set()
    with open(out_file, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, item, time in rows:
            if (user, item) in seen:
                continue
            seen.add((user, item))
            f.write(f"{user}\t{item}\t{time}\n")


if __name__ == "__main__":
    write_inter_row_by_row(f"{sys.argv[1]}/train_ratings.csv", sys.argv[2])
