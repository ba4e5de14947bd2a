"""`accelyolo push --weights W --repo org/name`: share a checkpoint as a Hugging Face model repository
(`--local-dir DIR` writes the same folder without uploading)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", required=True, help="a .safetensors bundle (best.safetensors), a YOLOv5/v8/11 .pt, or a folder"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo", help="the Hub model repository to upload to, org/name (created when missing)")
    target.add_argument("--local-dir", help="write model.safetensors, config.json and README.md here, upload nothing")
    parser.add_argument("--license", default="apache-2.0", help="the model card's licence field (default apache-2.0)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--message", default=None, help="commit message")


def run(args: argparse.Namespace) -> int:
    from accelyolo.weights.hub import push_to_hub, save_pretrained

    if args.local_dir:
        folder = save_pretrained(args.weights, args.local_dir, license=args.license)
        print(f"wrote {folder}/model.safetensors, config.json and README.md")
        return 0
    url = push_to_hub(
        args.weights,
        args.repo,
        private=args.private or None,
        token=args.token,
        license=args.license,
        commit_message=args.message,
    )
    print(f"pushed {args.weights} to {args.repo}: {url}")
    return 0
