"""Optuna studies, the single source of truth for a search: `schema` (what a record holds),
`storage` (where studies live, opening and checking them), `records` (the only writer) and
`front` (what the trials add up to). Their public names are the layer's API, reachable from the
package (`from autopeft import study as records`)."""

from autopeft.study.front import *  # noqa: F403
from autopeft.study.records import *  # noqa: F403
from autopeft.study.schema import *  # noqa: F403
from autopeft.study.storage import *  # noqa: F403
