"""``python -m tether.engine.guided_bench``: do 20 JSON schemas hold on the default model, 10 samples each?

Every schema is decoded ``--samples`` times at ``--temperature`` (all requests in
flight at once, seeded), and each output is parsed and validated with
``jsonschema``. A sample that ends on ``max_tokens`` before the object closes
counts as a failure. Prints the CPU with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import jsonschema

from tether.engine.config import EngineConfig
from tether.engine.cpu_tuning import cpu_info
from tether.engine.engine import Engine
from tether.engine.guided import Guided
from tether.engine.progress import progress
from tether.engine.request import Request
from tether.engine.sampling import SamplingParams

S, I, N, B = {"type": "string", "maxLength": 24}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}


def _obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": False}


# (prompt, schema): nested objects, enums, arrays, bounded numbers, required and optional fields.
SCHEMAS: list[tuple[str, dict]] = [
    ("Describe a person.", _obj({"name": S, "age": {"type": "integer", "minimum": 0, "maximum": 120}})),
    ("Give today's weather.", _obj({"city": S, "temp_c": {"type": "number", "minimum": -50, "maximum": 60},
                                    "sky": {"enum": ["sunny", "cloudy", "rainy"]}})),
    ("List three fruits.", _obj({"fruits": {"type": "array", "items": S, "minItems": 3, "maxItems": 3}})),
    ("Describe a book.", _obj({"title": S, "author": S, "year": {"type": "integer", "minimum": 1400,
                                                                 "maximum": 2030}, "isbn": S}, ["title", "author"])),
    ("Is Paris in France?", _obj({"answer": B, "confidence": {"type": "number", "minimum": 0, "maximum": 1}})),
    ("Describe a company and its address.", _obj({"name": S, "address": _obj({"street": S, "city": S,
                                                                             "zip": {"type": "string",
                                                                                     "pattern": "^[0-9]{5}$"}})})),
    ("Rate a movie.", _obj({"movie": S, "stars": {"type": "integer", "minimum": 1, "maximum": 5},
                            "review": {"type": "string", "maxLength": 60}}, ["movie", "stars"])),
    ("Give a to-do list.", _obj({"todos": {"type": "array", "maxItems": 4, "items": _obj(
        {"task": S, "done": B})}})),
    ("Pick a color.", _obj({"color": {"enum": ["red", "green", "blue", "yellow"]}})),
    ("Describe a point in 3D.", _obj({"x": N, "y": N, "z": N})),
    ("Describe a user account.", _obj({"username": {"type": "string", "pattern": "^[a-z]{3,12}$"},
                                       "role": {"enum": ["admin", "user", "guest"]}, "active": B,
                                       "email": S}, ["username", "role"])),
    ("Describe a recipe.", _obj({"dish": S, "minutes": {"type": "integer", "minimum": 1, "maximum": 240},
                                 "ingredients": {"type": "array", "items": S, "minItems": 1, "maxItems": 5}})),
    ("Summarize a test run.", _obj({"passed": {"type": "integer", "minimum": 0, "maximum": 1000},
                                    "failed": {"type": "integer", "minimum": 0, "maximum": 1000},
                                    "status": {"enum": ["green", "red"]}})),
    ("Describe a planet.", _obj({"name": S, "moons": {"type": "integer", "minimum": 0, "maximum": 200},
                                 "rings": B, "radius_km": {"type": "number", "minimum": 1000, "maximum": 100000}})),
    ("Give an HTTP response.", _obj({"status": {"enum": [200, 201, 400, 404, 500]}, "body": _obj(
        {"message": S, "code": {"type": "integer", "minimum": 0, "maximum": 999}}, ["message"])})),
    ("Describe a tree of two levels.", _obj({"label": S, "children": {"type": "array", "maxItems": 3, "items": _obj(
        {"label": S, "leaf": B})}})),
    ("Give a shopping cart.", _obj({"items": {"type": "array", "maxItems": 3, "items": _obj(
        {"sku": S, "qty": {"type": "integer", "minimum": 1, "maximum": 9},
         "price": {"type": "number", "minimum": 0, "maximum": 1000}})}, "currency": {"enum": ["USD", "EUR"]}})),
    ("Describe a meeting.", _obj({"topic": S, "attendees": {"type": "array", "items": S, "maxItems": 4},
                                  "room": {"type": ["string", "null"], "maxLength": 12}}, ["topic", "attendees"])),
    ("Give a tool call to list files.", _obj({"name": {"const": "shell"}, "arguments": _obj(
        {"command": {"type": "string", "maxLength": 40}})})),
    ("Classify this text: 'great product, fast delivery'.", _obj({
        "sentiment": {"enum": ["positive", "neutral", "negative"]},
        "scores": _obj({"positive": {"type": "number", "minimum": 0, "maximum": 1},
                        "negative": {"type": "number", "minimum": 0, "maximum": 1}})})),
]


async def _run(args) -> dict:
    engine = Engine(EngineConfig(model=args.model, max_num_seqs=64))
    results: list[list[bool]] = [[] for _ in SCHEMAS]
    failures: list[str] = []

    async def one(k: int, prompt: str, schema: dict, seed: int, advance) -> None:
        msgs = [{"role": "system", "content": "Answer with one JSON object."},
                {"role": "user", "content": f"{prompt} JSON schema: {json.dumps(schema)}"}]
        sp = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=seed,
                            guided=Guided(json_schema=schema))
        text = "".join([o.text async for o in engine.generate(Request(messages=msgs, sampling=sp))])
        try:
            jsonschema.validate(json.loads(text), schema)
            results[k].append(True)
        except (ValueError, jsonschema.ValidationError) as e:
            results[k].append(False)
            failures.append(f"schema {k} seed {seed}: {type(e).__name__}: {str(e)[:120]} in {text[:120]!r}")
        advance()

    t0 = time.perf_counter()
    with progress("schemas x samples", len(SCHEMAS) * args.samples, args.json) as advance:
        await asyncio.gather(*(one(k, p, s, seed, advance) for k, (p, s) in enumerate(SCHEMAS)
                               for seed in range(args.samples)))
    wall = time.perf_counter() - t0
    stats = engine.stats()
    await engine.close()
    valid = sum(map(sum, results))
    return {"model": args.model, **cpu_info(), "schemas": len(SCHEMAS), "samples_per_schema": args.samples,
            "temperature": args.temperature, "valid": valid, "total": len(SCHEMAS) * args.samples,
            "schemas_all_valid": sum(all(r) for r in results), "per_schema_valid": [sum(r) for r in results],
            "generated_tokens": stats["generated_tokens"], "wall_s": wall, "failures": failures}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tether.engine.guided_bench", description=__doc__)
    p.add_argument("--model", default="default")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = asyncio.run(_run(args))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"{r['valid']}/{r['total']} outputs valid; {r['schemas_all_valid']}/{r['schemas']} schemas valid in all "
              f"{r['samples_per_schema']} samples (T={r['temperature']}); {r['generated_tokens']} tokens in "
              f"{r['wall_s']:.1f}s\ncpu: {r['cpu_model']} ({r['cpu_capability']}, {r['torch_threads']} threads)")
        for f in r["failures"]:
            print("  " + f)
    return r


if __name__ == "__main__":
    main()
