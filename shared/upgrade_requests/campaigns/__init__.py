"""Transition campaigns (issue 19): many customers upgraded as one durable, paced object.

- `model`: the campaign and its members, their states and the transitions between them.
- `pace`: when the next Partner Center call of a campaign may go (its `perHour`, spread evenly,
  halved on a 429 and climbing back), carried on the campaign entity across timer runs.
- `steering`: create / start / pause / resume / cancel (ETag-guarded read-decide-write).
- `runner`: the timer's share of the work (discovery, assessment, starts, following requests).

Storage: `shared.upgrade_requests.store.campaigns` (its docstring tables the entities).
"""
