"""Blueprints (issue 11): a fleet's intended state as a file, applied, diffed and reconciled.

Pure modules: `load` (files -> checked blueprints), `ownership` (which blueprint owns each device),
`diff` (what applying would change), `reconcile` (the controller's decisions), `delivery` (whether
a version reached a fleet). Around them the service (`service`, `app`, `adapters/`) and the CLI
(`cli`, `render`). docs/BLUEPRINTS.md explains the resource.
"""
