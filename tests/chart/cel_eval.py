"""Evaluates CEL match conditions the way the API server does for webhooks.

stdin: {"expressions": [..], "objects": [..]}; stdout: one list per object,
one entry per expression: true, false, or "error: ..." (on the API server an
error applies the failurePolicy, so for a pod it must never happen). Kubernetes' CEL has the strings extension
(`lowerAscii`); cel-python does not, so it is supplied here.
"""
import json
import sys

import celpy

request = json.load(sys.stdin)
env = celpy.Environment()


def lower_ascii(s):
    return celpy.celtypes.StringType("".join(c.lower() if c.isascii() else c for c in str(s)))


programs = [env.program(env.compile(e), functions={"lowerAscii": lower_ascii})
            for e in request["expressions"]]
results = []
for obj in request["objects"]:
    activation = {"object": celpy.json_to_cel(obj)}
    row = []
    for program in programs:
        try:
            value = program.evaluate(activation)
        except celpy.CELEvalError as e:
            value = e
        row.append(bool(value) if isinstance(value, celpy.celtypes.BoolType) else f"error: {value!r}")
    results.append(row)
json.dump(results, sys.stdout)
