"""movierec beside RecTools (the library a user would pick instead) on movierec's holdout: quality and time.

    python bench/peers.py [--data embedded|latest-small|synthetic|RAW_DIR] [--users N]
                          [--models EASE SASRec gSASRec BERT4Rec] [--epochs 3] [--max-len 50] [--hidden 32]
                          [--layers 2] [--heads 2] [--dropout 0.2] [--batch 128] [--lr 0.001] [--reg 400]
                          [--negatives 256] [--gbce-t 0.75] [--seed 0]

Needs RecTools: pip install -e '.[peers]' (the version measured is pinned there).

Each model pair trains in its own processes at matched settings on movierec's validation training
interactions (the prepared data's valid .inter): EASE (regularization --reg), SASRec with the softmax
over all items (movierec's loss_type CE, RecTools' loss softmax), gSASRec (movierec's yaml/gsasrec.yaml,
RecTools' SASRec with loss gBCE; --negatives uniform negatives, calibration --gbce-t) and BERT4Rec, with
the same maximum length, hidden size (feed-forward size as RecTools builds it), layers, heads, dropout,
batch, learning rate and --epochs, no early stopping. Each writes the top 10 unseen films of every
holdout user; all are scored here by movierec's own metric (recbole_ext.evaluator.metrics) on the same holdout:
Recall@10 with its 95% interval, the last and random parts, and movierec minus RecTools with the paired
95% interval (per user, the same users resampled); then seconds per fit (data set, set-up and training),
the mean seconds of a training epoch alone (EASE: of the closed form) and per 1,000 training sequences
(one per user with two interactions or more, in both libraries), and the peak resident memory.
Imports are not timed: torch._dynamo, which RecTools imports with Lightning and movierec with its first
optimizer (2-4 s), is imported before either clock starts.

--data synthetic: atomic_data's competition-scale synthetic data (bench/common.py); --users N runs on a
seeded sample of N of the data's users (the same files, fewer users: an epoch at competition scale in
minutes on a CPU; its quality means nothing).

Goal (issue 30): at matched settings movierec's Recall@10 at least RecTools' (the paired interval not
below 0) for every pair; its epoch at most RecTools' time.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BENCH_DATA, LATEST_SMALL, competition_scale_raw, latest_small_raw, measured, table

DATA_DIR = BENCH_DATA / "peers"
INSTALL = (  # RecTools 0.19.0 asks numpy<2 below Python 3.13 (it runs on movierec's 2.4) and fails on pandas 3
    "error: RecTools is not installed: pip install -e '.[peers]' (Python 3.13+); on Python 3.11-3.12: pip install "
    "--no-deps rectools==0.19.0 && pip install pytorch-lightning==2.5.2 'pm-implicit>=0.7.3,<0.8' 'typeguard>=4.1,<5' "
    "'pandas>=2.2,<3'"
)
MODELS = ("EASE", "SASRec", "gSASRec", "BERT4Rec")
LIBRARIES = ("movierec", "RecTools")
QUIET = ["state=WARNING", "show_progress=false", "device=cpu"]
BERT4REC_FEED_FORWARD = 4  # RecTools' BERT4Rec: feed-forward size = 4 x hidden (its SASRec: 1 x hidden)


def raw_folder(data, users=None):
    """The raw folder of --data (None: the embedded MovieLens-100K) and its name, a sample of --users users
    of it when given; exits 2 on a bad one."""
    if data == "embedded":
        folder, name = None, "embedded MovieLens-100K"
    elif data == "latest-small":
        folder, name = latest_small_raw(), "MovieLens ml-latest-small"
        if folder is None:
            sys.exit(f"error: --data latest-small: MovieLens ml-latest-small is not at {LATEST_SMALL}")
    elif data == "synthetic":
        folder, name = competition_scale_raw(), "synthetic competition-scale data"
    elif (Path(data) / "train_ratings.csv").is_file():
        folder, name = Path(data), str(data)
    else:
        sys.exit(
            f"error: --data {data}: no train_ratings.csv there (embedded, latest-small, synthetic or a raw folder)"
        )
    if users is None:
        return folder, name
    from atomic_data import RawDataError, base_settings
    from atomic_data.movielens import embedded_default
    from atomic_data.sample import write_user_sample

    source = folder or embedded_default(Path(__file__).resolve().parent.parent / base_settings()["data_dir"])
    sample = BENCH_DATA / f"{Path(source).name}-{users}-users"
    if not (sample / "train_ratings.csv").is_file():
        try:
            write_user_sample(source, sample, users, seed=0)
        except RawDataError as error:
            sys.exit(f"error: --users {users}: {error}")
    return sample, f"{name}, a sample of {users} users (seed 0)"


def movierec_settings(model, args):
    """movierec's run settings of a model at the bench's matched settings."""
    from bench.common import model_settings

    data = [f"data={args.data_raw}"] if args.data_raw else []
    common = [*QUIET, *data, f"data_dir={args.data_dir}", f"seed={args.seed}"]
    if model == "EASE":
        return model_settings("EASE", [*common, f"reg_weight={args.reg}"])
    inner = args.hidden * (BERT4REC_FEED_FORWARD if model == "BERT4Rec" else 1)
    encoder = [
        f"MAX_ITEM_LIST_LENGTH={args.max_len}",
        f"hidden_size={args.hidden}",
        f"inner_size={inner}",
        f"n_layers={args.layers}",
        f"n_heads={args.heads}",
        f"hidden_dropout_prob={args.dropout}",
        f"attn_dropout_prob={args.dropout}",
        f"train_batch_size={args.batch}",
        f"learning_rate={args.lr}",
        f"epochs={args.epochs}",
        "min_epoch_steps=1",  # an epoch is one pass over the users, as RecTools' (movierec's default repeats it)
        f"embedding_init={args.embedding_init}",
    ]
    if model == "gSASRec":
        gbce = [f"neg_samples={args.negatives}", f"gbce_t={args.gbce_t}"]
        return model_settings("yaml/gsasrec.yaml", [*common, *encoder, *gbce])
    loss = ["loss_type=CE"] if model == "SASRec" else []
    return model_settings(model, [*common, *encoder, *loss])


def rectools_model(model, args, epoch_seconds):
    """RecTools' model at the matched settings; its Lightning trainer appends each epoch's seconds."""
    from pytorch_lightning import Callback, Trainer
    from rectools.models import BERT4RecModel, EASEModel, SASRecModel

    class EpochClock(Callback):
        def on_train_epoch_start(self, trainer, module):
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            epoch_seconds.append(time.perf_counter() - self.started)

    def trainer():  # RecTools' own trainer (TransformerModelBase._init_trainer) and the clock
        return Trainer(
            max_epochs=args.epochs,
            min_epochs=args.epochs,
            deterministic=True,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            devices=1,
            callbacks=[EpochClock()],
        )

    if model == "EASE":
        return EASEModel(regularization=args.reg)
    common = dict(
        session_max_len=args.max_len,
        n_factors=args.hidden,
        n_blocks=args.layers,
        n_heads=args.heads,
        dropout_rate=args.dropout,
        batch_size=args.batch,
        lr=args.lr,
        epochs=args.epochs,
        deterministic=True,
        verbose=0,
        get_trainer_func=trainer,
    )
    if model == "SASRec":
        return SASRecModel(loss="softmax", **common)
    if model == "gSASRec":
        return SASRecModel(loss="gBCE", n_negatives=args.negatives, gbce_t=args.gbce_t, **common)
    return BERT4RecModel(loss="softmax", **common)


@contextlib.contextmanager
def clocked(owner, name, seconds):
    """owner.name (a method) with each call's seconds appended to seconds: the bench's clock around the
    library's own code, which runs unchanged."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


def train_movierec(model, args, holdout_users, out):
    """Fit on the validation training set for --epochs; the holdout users' top 10, the seconds of the fit and
    of each epoch (EASE: of its closed form)."""
    from recbole_ext.models.ease import EASE
    from recbole_ext.models.window_trainer import WindowTrainer
    from recbole_ext.quick_start.pipeline import fit, prepare_data
    from recbole_ext.trainer.predict import top_k
    from recbole_ext.trainer.recbole_config import resolve
    from recbole_ext.utils.run_folder import Timer

    settings = movierec_settings(model, args)
    prepared, timer, epoch_seconds = prepare_data(settings), Timer(), []
    owner, name = (EASE, "fit") if model == "EASE" else (WindowTrainer, "_train_epoch")
    with clocked(owner, name, epoch_seconds):
        result = fit(resolve(settings), prepared, prepared.valid_name, out, timer, "valid", epochs=args.epochs)
    dataset = result.dataset
    users = dataset.token2id(dataset.uid_field, [str(user) for user in holdout_users])
    top = top_k(result.model, dataset, result.history, 10, users=users)
    return top, timer["valid_dataset"] + timer["valid_train"], epoch_seconds


def train_rectools(model, args, holdout_users, out):
    """The same with RecTools: its data set built from the same interactions, its epochs clocked by Lightning."""
    import pandas as pd
    from pytorch_lightning import seed_everything
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import EASEModel

    from atomic_data.tables import read_inter
    from recbole_ext.quick_start.pipeline import prepare_data

    prepared = prepare_data(movierec_settings(model, args))
    users, items, times = read_inter(prepared.inter_path(prepared.valid_name))
    interactions = pd.DataFrame(
        {
            Columns.User: users,
            Columns.Item: items,
            Columns.Weight: 1.0,
            Columns.Datetime: pd.to_datetime(times, unit="s"),
        }
    )
    epoch_seconds = []
    seed_everything(args.seed)  # movierec's seed
    started = time.perf_counter()
    dataset = Dataset.construct(interactions)
    recommender = rectools_model(model, args, epoch_seconds)
    with clocked(EASEModel, "_fit", epoch_seconds):
        recommender.fit(dataset)
    fit_seconds = time.perf_counter() - started
    top = recommender.recommend(holdout_users, dataset, k=10, filter_viewed=True)
    top = top.rename(columns={Columns.User: "user", Columns.Item: "item"}).assign(rank=top[Columns.Rank] - 1)
    return top, fit_seconds, epoch_seconds


def child(library, model, args):
    """In a fresh process: train one model, write its top 10 per holdout user, print one JSON line."""
    import numpy as np
    import pandas as pd
    import torch._dynamo  # noqa: F401  (imported by RecTools' import, by movierec's first optimizer: never timed)

    from recbole_ext.quick_start.pipeline import prepare_data

    holdout = pd.read_csv(prepare_data(movierec_settings(model, args)).holdout_path)
    holdout_users = np.unique(holdout["user"])
    train = train_movierec if library == "movierec" else train_rectools
    with tempfile.TemporaryDirectory(prefix="peers-") as work:
        top, fit_seconds, epoch_seconds = train(model, args, holdout_users, work)
    top[["user", "item", "rank"]].to_csv(args.top_file, index=False)
    print(json.dumps({"fit_s": fit_seconds, "epoch_s": epoch_seconds}))


def training_sequences(args):
    """Sequences of an epoch: users with two interactions or more in the validation training set (RecTools'
    train_min_user_interactions; a movierec window needs one input and one target)."""
    import numpy as np

    from atomic_data.tables import read_inter
    from recbole_ext.quick_start.pipeline import prepare_data

    prepared = prepare_data(movierec_settings("EASE", args))
    _, counts = np.unique(read_inter(prepared.inter_path(prepared.valid_name))[0], return_counts=True)
    return int((counts >= 2).sum())


def compare(args, argv):
    import pandas as pd

    from recbole_ext.evaluator.metrics import RECALL, bootstrap_interval, paired_differences, part_scores
    from recbole_ext.quick_start.pipeline import prepare_data

    holdout = pd.read_csv(prepare_data(movierec_settings("EASE", args)).holdout_path)
    sequences = training_sequences(args)
    rows, differences = [], []
    with tempfile.TemporaryDirectory(prefix="peers-") as work:
        for model in args.models:
            per_user = {}
            for library in LIBRARIES:
                top_file = Path(work) / f"{library}-{model}.csv"
                command = [sys.executable, __file__, *argv, "--child", library, model, "--top-file", str(top_file)]
                _, peak_mb, stdout = measured(command)
                result = json.loads(stdout.strip().splitlines()[-1])
                scores = part_scores(pd.read_csv(top_file), holdout)
                per_user[library] = scores
                low, high = bootstrap_interval(scores[RECALL])
                epoch = sum(result["epoch_s"]) / len(result["epoch_s"])
                rows.append(
                    (
                        model,
                        library,
                        f"{scores[RECALL].mean():.4f}",
                        f"{low:.4f} to {high:.4f}",
                        *(f"{scores[f'{RECALL} {part}'].mean():.4f}" for part in ("last", "random")),
                        len(result["epoch_s"]),
                        f"{result['fit_s']:.1f}",
                        f"{epoch:.2f}",
                        "-" if model == "EASE" else f"{epoch * 1000 / sequences:.2f}",
                        f"{peak_mb:.0f}",
                    )
                )
            for column in (RECALL, f"{RECALL} last", f"{RECALL} random"):
                both = pd.DataFrame({library: per_user[library][column] for library in LIBRARIES}).dropna()
                difference, low, high = paired_differences(both, "RecTools")["movierec"]
                differences.append((model, column, f"{difference:+.4f}", f"{low:+.4f} to {high:+.4f}", len(both)))
    header = ("model", "library", RECALL, "95% interval", "last", "random", "epochs", "fit s", "epoch s")
    print(f"{sequences} training sequences per epoch")
    print(table(rows, (*header, "s per 1k sequences", "peak MB")))
    print(table(differences, ("model", "metric", "movierec - RecTools", "paired 95% interval", "users")))


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="embedded", help="embedded | latest-small | synthetic | a raw folder")
    p.add_argument("--users", type=int, help="a seeded sample of this many of the data's users")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where the prepared data is kept")
    p.add_argument("--models", nargs="+", choices=MODELS, default=["EASE", "SASRec"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--reg", type=float, default=400.0, help="EASE's L2 regularization")
    p.add_argument("--seed", type=int, default=0, help="both libraries' seed (the holdout keeps its own)")
    p.add_argument("--negatives", type=int, default=256, help="gSASRec's uniform negatives per target")
    p.add_argument("--gbce-t", type=float, default=0.75, help="gSASRec's calibration t in [0, 1]")
    p.add_argument(
        "--embedding-init",
        choices=["normal", "xavier"],
        default="normal",
        help="movierec's item and position tables: normal (its default) or xavier (RecTools' initialisation)",
    )
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--top-file", type=Path, help=argparse.SUPPRESS)
    return p


def main():
    argv = sys.argv[1:]
    args = parser().parse_args(argv)
    try:
        import rectools  # noqa: F401
    except ImportError:
        print(INSTALL)
        return 2
    args.data_raw, data_name = raw_folder(args.data, args.users)
    if args.child:
        return child(*args.child, args)
    print(f"{data_name}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; settings: {vars(args)}")
    compare(args, argv)


if __name__ == "__main__":
    sys.exit(main())
