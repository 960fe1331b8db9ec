"""The tagger's subcommands, ``jetlib predict``, ``jetlib export`` and ``jetlib serve``, added to
``jetlib``'s parser by :func:`add_all`. Nothing heavy is imported until a subcommand runs."""

from __future__ import annotations

import json


def _predict(args) -> None:
    from jetlib.cli import keys_of
    from jetlib.tagger.predict import predict

    print(json.dumps(predict(args.model, args.input, args.out, split=args.split, data=args.data,
                             device=args.device, batch_size=args.batch_size, keys=keys_of(args))))


def _export(args) -> None:
    from jetlib.tagger.export import export

    card = export(args.model, args.out, data=args.data)
    print(json.dumps({"out": args.out, "onnx": card["onnx"]["sha256"], "name": card["name"],
                      **{k: v for k, v in card["test_metrics"].items() if v is not None}}))


def _serve(args) -> None:
    from jetlib.tagger.serve import serve

    serve(args.model, args.http_port, name=args.name, max_batch=args.max_batch, grpc_port=args.grpc_port,
          threads=args.threads)


def add_predict(sub) -> None:
    from jetlib.cli import add_key_flags, positive_int

    p = sub.add_parser("predict", help="score the jets of an HDF5 file or a dataset split with a trained model",
                       description="Run a trained model (jetlib finetune or baseline --out, or its model.pt; local "
                       "or s3://) over an HDF5 file in either public layout (labels optional) or a dataset's "
                       "split, streaming in bounded memory, and write one row per jet to Parquet (row, p_quark "
                       "or mass_pred_gev, and the labels the input has). Prints a JSON line, with the AUC or MAE "
                       "when the input has labels.")
    p.add_argument("--model", required=True, help="training folder or its model.pt (local or s3://)")
    p.add_argument("--input", required=True, help="HDF5 file (X_jets/y/m0/pt or jet/Y/m/pT), or a dataset URI "
                                                  "with --split")
    p.add_argument("--split", choices=("train", "val", "test"), help="the split of a dataset URI to score")
    p.add_argument("--out", required=True, help="the Parquet file to write (local or s3://)")
    p.add_argument("--data", help="the model's training dataset, if it moved (its normalisation is read there)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="jets per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    add_key_flags(p)
    p.set_defaults(func=_predict)


def add_export(sub) -> None:
    p = sub.add_parser("export", help="a trained model as model.onnx with its model card",
                       description="Write model.onnx (input: raw pixel energies (batch, C, H, W) float32, the "
                       "train-split normalisation inside; output: p_quark or mass_pred_gev), model_card.md and "
                       "model_card.json into --out, after checking ONNX Runtime against torch on test jets.")
    p.add_argument("--model", required=True, help="training folder or its model.pt (local or s3://)")
    p.add_argument("--out", required=True, help="output folder (local or s3://)")
    p.add_argument("--data", help="the model's training dataset, if it moved")
    p.set_defaults(func=_export)


def add_serve(sub) -> None:
    from jetlib.cli import positive_int

    p = sub.add_parser("serve", help="serve an exported model over HTTP (KServe, Open Inference Protocol v2)",
                       description="A KServe model server over the ONNX model jetlib export wrote: /v2/health/ready, "
                       "/v2/models/NAME, /v2/models/NAME/infer with dense ('jets') or sparse ('index', 'value', "
                       "'counts') jets, and /v1/models. Runs until interrupted.")
    p.add_argument("--model", required=True, help="the folder jetlib export wrote (local or s3://)")
    p.add_argument("--http-port", type=positive_int, default=8080, help="HTTP port")
    p.add_argument("--grpc-port", type=positive_int, help="also serve gRPC on this port (off without it)")
    p.add_argument("--name", default="jet-tagger", help="the model's name in the URLs")
    p.add_argument("--max-batch", type=positive_int, default=256, help="most jets per request")
    p.add_argument("--threads", type=positive_int, default=1, help="ONNX Runtime threads")
    p.set_defaults(func=_serve)


ADDERS = (add_predict, add_export, add_serve)
