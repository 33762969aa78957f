"""Index use, read from the plans the server chooses for the commands the service sent."""

from typing import Any

# What a command carries besides the query itself: session, transaction, cluster time.
_ENVELOPE = {"lsid", "txnNumber", "autocommit", "startTransaction", "readConcern"}


async def plan_of(database: Any, command: dict[str, Any]) -> str:
    """The stages of the winning plan for ``command`` as the service sent it.

    Accepts both plan shapes mongod answers with: the classic engine's (``winningPlan``,
    stages nested by ``inputStage``) and the slot-based engine's (``winningPlan.queryPlan``).
    """
    query = {k: v for k, v in command.items() if not k.startswith("$") and k not in _ENVELOPE}
    explained = await database.command({"explain": query, "verbosity": "queryPlanner"})
    winning = explained["queryPlanner"]["winningPlan"]
    stages: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        stages.append(node.get("stage", ""))
        for child in [node.get("inputStage"), *node.get("inputStages", [])]:
            if child:
                walk(child)

    walk(winning.get("queryPlan", winning))
    return ",".join(stages)
