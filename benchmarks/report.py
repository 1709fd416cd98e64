"""What every benchmark does with its figures: write them as JSON (`--out`) and say where."""
import json
import os


def write_json(path, results):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {path}', flush=True)
