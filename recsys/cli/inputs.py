"""The commands that write an input table: `recsys generate` and `recsys import`."""

from __future__ import annotations

import argparse

from recsys import storage
from recsys.errors import ConfigError, InputError


def cmd_generate(args: argparse.Namespace) -> int:
    from recsys.data import generate_interactions

    storage.check_output(args.output, (), args.force)
    if not getattr(args, "quiet", False):
        print(
            f"generating {args.users} users x {args.items} items in {args.clusters} clusters...", flush=True
        )
    try:
        frame = generate_interactions(
            n_users=args.users,
            n_items=args.items,
            n_clusters=args.clusters,
            string_ids=args.string_ids,
            seed=args.seed,
        )
    except ValueError as exc:
        raise ConfigError(f"generate: {exc}") from None
    path = storage.write_interactions_table(frame, args.output)
    print(f"wrote {len(frame)} interactions ({args.users} users, {args.items} items) to {path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from recsys.data.interactions import clean_table
    from recsys.storage.importers import parse_mapping, read_source, to_implicit

    storage.check_output(args.output, [args.input], args.force)  # never the source, nor unasked
    if args.map is not None and args.format != "table":
        raise ConfigError(f"--map is for format 'table'; {args.format} names its own columns")
    mapping = parse_mapping(args.map) if args.map is not None else None
    frame = read_source(args.format, args.input, mapping)
    try:
        frame = to_implicit(frame, min_rating=args.min_rating, weighting=args.weighting)
    except InputError as exc:
        raise InputError(f"{args.input}: {exc}") from None
    if frame.attrs.get("dropped_not_positive"):
        print(f"dropped {frame.attrs['dropped_not_positive']} row(s) with a zero or negative rating")
    table = clean_table(frame, source=args.input)  # refuse now what `recsys run` would refuse
    path = storage.write_interactions_table(frame, args.output)
    print(
        f"wrote {len(frame)} interactions ({len(set(table.users.tolist()))} users, "
        f"{len(set(table.items.tolist()))} items, weighting {args.weighting}) to {path}"
    )
    return 0
