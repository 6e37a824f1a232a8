"""Find the nearest gallery images of query images from their embeddings (files written by
`adasp extract`). Exact search: chunked torch, or faiss for large galleries when installed.

Examples:
  adasp search --query query.npz --gallery gallery.npz --topk 10 --output results.json
  adasp search --embeddings market.npz --topk 5 --output results.csv
  adasp search --embeddings market.npz --metric euclidean --backend torch
"""

from __future__ import annotations

import argparse

HELP = "top-k gallery images for query images, from embedding files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("embeddings (either --query and --gallery, or --embeddings)")
    source.add_argument("--query", default=None, help="query embedding file (.npz)")
    source.add_argument("--gallery", default=None, help="gallery embedding file (.npz)")
    source.add_argument(
        "--embeddings",
        default=None,
        help="one embedding file with a 'splits' array; uses its 'query' and 'gallery' rows",
    )
    parser.add_argument("--topk", type=int, default=10, help="gallery images per query (10)")
    parser.add_argument(
        "--metric", choices=["cosine", "euclidean"], default="cosine", help="distance (cosine)"
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "faiss"],
        default="auto",
        help="auto: faiss for galleries of 10,000+ images when installed, else torch (auto)",
    )
    parser.add_argument(
        "--output", default=None, help="write all results to this .json or .csv file"
    )
    parser.add_argument(
        "--show", type=int, default=5, help="queries to print in the summary table (5; 0: none)"
    )
    parser.add_argument(
        "--keep-same-camera",
        action="store_true",
        help="keep gallery images of the query's identity from the query's camera (left out "
        "by default when cameras are known, as the evaluation does: often the query itself)",
    )
    model = parser.add_argument_group(
        "or embed two folders of images with a trained model (instead of embedding files)"
    )
    model.add_argument("--checkpoint", default=None, help="model.pt or checkpoints/last.pt")
    model.add_argument("--config", default=None, help="preset or YAML (default: the checkpoint's)")
    model.add_argument("--query-folder", default=None, help="folder of query images")
    model.add_argument("--gallery-folder", default=None, help="folder of gallery images")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def load_query_gallery(args: argparse.Namespace):
    """The query and gallery :class:`~adasp.evaluation.embeddings.Embeddings` named by
    ``--query``/``--gallery`` or ``--embeddings``."""
    from adasp.errors import UserInputError
    from adasp.evaluation.embeddings import load_embeddings

    if args.embeddings and (args.query or args.gallery):
        raise UserInputError("give either --embeddings, or --query and --gallery, not both")
    if args.embeddings:
        embeddings = load_embeddings(args.embeddings)
        return embeddings.split("query"), embeddings.split("gallery")
    if not (args.query and args.gallery):
        raise UserInputError(
            "no embeddings given: pass --query Q.npz --gallery G.npz, or --embeddings E.npz "
            "with a 'splits' array (files written by `adasp extract`)"
        )
    return load_embeddings(args.query), load_embeddings(args.gallery)


def search_and_report(query, gallery, args: argparse.Namespace) -> int:
    """Search ``gallery`` for every ``query`` embedding, write ``--output`` and print a summary.

    The part of ``adasp search`` after the embeddings exist: the checkpoint-and-folder mode
    extracts embeddings and calls this too.
    """
    from adasp.errors import UserInputError
    from adasp.evaluation.search import (
        format_search_table,
        search_embeddings,
        write_search_results,
    )

    if args.topk < 1:
        raise UserInputError(f"--topk must be at least 1; got {args.topk}")
    if args.output and not str(args.output).lower().endswith((".json", ".csv")):
        raise UserInputError(f"--output must end in .json or .csv; got {args.output!r}")
    if query.dim != gallery.dim:
        raise UserInputError(
            f"query embeddings have dimension {query.dim} but gallery embeddings {gallery.dim}; "
            "extract both with the same model"
        )
    result = search_embeddings(
        query,
        gallery,
        args.topk,
        args.metric,
        args.backend,
        exclude_same_camera=False if args.keep_same_camera else None,
    )
    print(
        f"searched {len(query)} queries against {len(gallery)} gallery images "
        f"({args.metric} distance, {result.backend} backend, top {result.indices.shape[1]})"
    )
    if result.same_camera_excluded:
        print(
            "left out: gallery images of the query's identity from the query's camera, as in "
            "the evaluation (--keep-same-camera keeps them)"
        )
    if args.show > 0 and len(query):
        print(format_search_table(result, args.show))
    if args.output:
        print(f"results: {write_search_results(result, args.output)}")
    return 0


def embed_folders(args: argparse.Namespace):
    """Query and gallery embeddings of ``--query-folder``/``--gallery-folder`` by the model of
    ``--checkpoint``."""
    import numpy as np

    from adasp.cli.common import show_progress
    from adasp.data.folder import list_folder_images
    from adasp.engine.builders import build_evaluator
    from adasp.engine.distributed import resolve_device
    from adasp.engine.inference import (
        build_inference_model,
        inference_preprocessing,
        resolve_run_config,
    )
    from adasp.errors import UserInputError
    from adasp.evaluation.embeddings import Embeddings

    if args.query or args.gallery or args.embeddings:
        raise UserInputError("give either embedding files or --checkpoint with folders, not both")
    if not (args.query_folder and args.gallery_folder):
        raise UserInputError("--checkpoint needs --query-folder DIR and --gallery-folder DIR")
    config, checkpoint = resolve_run_config(args.config, args.checkpoint, [])
    device = resolve_device(args.device)
    model = build_inference_model(config, checkpoint, device, args.checkpoint)
    transform = inference_preprocessing(config, checkpoint).transform()
    evaluator = build_evaluator(config, test_sets=[], transform=transform)
    out = []
    for folder in (args.query_folder, args.gallery_folder):
        samples = list_folder_images(folder)
        features = evaluator.embed(model, samples, device, progress=show_progress(args))
        out.append(
            Embeddings(
                features.numpy().astype(np.float32),
                np.array([s.pid for s in samples], dtype=np.int64),
                np.array([s.camid for s in samples], dtype=np.int64),
                np.array([s.path for s in samples]),
            )
        )
    return out[0], out[1]


def run(args: argparse.Namespace) -> int:
    import contextlib

    from adasp.cli.common import claim_output_file
    from adasp.errors import UserInputError

    if args.output and not str(args.output).lower().endswith((".json", ".csv")):
        raise UserInputError(f"--output must end in .json or .csv; got {args.output!r}")
    # The output location is checked (and its run folder locked) before any embedding.
    claim = claim_output_file(args.output) if args.output else contextlib.nullcontext()
    with claim:
        if args.checkpoint:
            query, gallery = embed_folders(args)
        else:
            query, gallery = load_query_gallery(args)
        return search_and_report(query, gallery, args)
