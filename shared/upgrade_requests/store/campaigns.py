r"""Campaigns in the request table: where each entity lives and every write of it.

| entity                      | PartitionKey       | RowKey                             | read by            |
|-----------------------------|--------------------|------------------------------------|--------------------|
| campaign                    | `c-{campaignId}`   | `campaign`                         | routes, timer      |
| staged customer ids (chunk) | `c-{campaignId}`   | `in\|{n:05d}`                      | timer, when needed |
| member                      | `c-{campaignId}`   | `m\|{customerId}`                  | members, report    |
| assess / start queue entry  | `c-{campaignId}`   | `q\|assess\|{cust}`, `q\|start\|{cust}` | timer: `top`     |
| follow queue entry          | `c-{campaignId}`   | `q\|follow\|{dueAt}\|{cust}`        | timer: due, `top`  |
| campaign with work          | `campaigns-active` | `{campaignId}`                     | timer (small)      |
| list entry                  | `campaigns`        | `{9999999999 - epoch s}\|{id}`     | list (`top`)       |

Why: a campaign's entities share its partition, so a member's transition (member, queue rows
and the campaign's counts and pace) is ONE entity-group transaction: a crash leaves all of it or
none of it, and the counts on the campaign are exact without counting members. The timer reads
the `campaigns-active` partition (campaigns with work only), then per campaign the head of one
queue range (`RowKey ge 'q|assess|'`, `top` = what it can do now): what it reads follows what it
does, never the campaign's size or the history. A queue entry is deleted in the transaction
that does its work. `GET /api/campaigns` pages the `campaigns` partition newest first.

Creation (`create`): the list entry, the active entry, then the campaign row with all its
chunks (<= 50 rows of <= 1,000 ids) in one transaction. A crash before the last leaves entries
naming no campaign: lists skip them, the timer drops an active one older than a minute.
Chunks are expanded into members by the timer when its assess queue runs short (`expand`);
a crash inside an expansion is finished by expanding the chunk again (inserts that find their
member already there are checked one by one), and only `finish_chunk` counts it done.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.upgrade_requests.campaigns.model import Campaign, Member, iso, parse_time
from shared.upgrade_requests.store.table import TableOps, WriteConflict, storage_error

CAMPAIGN_ROW = "campaign"
ACTIVE_PARTITION = "campaigns-active"
LIST_PARTITION = "campaigns"
CHUNK_PREFIX = "in|"
MEMBER_PREFIX = "m|"
QUEUE_PREFIX = "q|"
CHUNK_SIZE = 1000
_IDS_PER_PROPERTY = 500  # 500 ids x 37 characters: under a string property's 32 K characters
MAX_OPERATIONS = 100  # an entity-group transaction's limit
_EPOCH_CEILING = 9_999_999_999


def campaign_pk(campaign_id: str) -> str:
    return f"c-{campaign_id.lower()}"


def member_row(customer_id: str) -> str:
    return MEMBER_PREFIX + customer_id.lower()


def queue_row(queue: str, customer_id: str, due: datetime | None = None) -> str:
    if due is None:
        return f"{QUEUE_PREFIX}{queue}|{customer_id.lower()}"
    return f"{QUEUE_PREFIX}{queue}|{due.astimezone(UTC):%Y%m%dT%H%M%S}|{customer_id.lower()}"


def list_row(campaign: Campaign) -> str:
    return f"{_EPOCH_CEILING - int(campaign.created_at.timestamp()):010d}|{campaign.campaign_id}"


@dataclass(frozen=True)
class StoredCampaign:
    campaign: Campaign
    etag: str


@dataclass(frozen=True)
class StoredMember:
    member: Member
    etag: str


@dataclass(frozen=True)
class QueueEntry:
    row: str
    customer_id: str
    etag: str


@dataclass
class MemberChange:
    """One member's transition: its new value (written over `etag`, or inserted when None), the
    queue rows it leaves (deleted, ETag-guarded) and the one it joins (inserted)."""

    member: Member
    etag: str | None
    leave: list[QueueEntry] = field(default_factory=list)
    join: str | None = None

    @property
    def operations(self) -> int:
        return 1 + len(self.leave) + (1 if self.join else 0)


@dataclass(frozen=True)
class Expansion:
    new: int  # members inserted by this call
    already: int  # members of this chunk a crashed earlier expansion had inserted
    duplicates: int  # customers already members through another chunk (counted once)


class CampaignStore(TableOps):
    """Every read and write of campaign entities (over the request table's client)."""

    # --- the campaign -----------------------------------------------------------------------

    def create(self, campaign: Campaign, chunks: Sequence[Sequence[str]]) -> StoredCampaign:
        if len(chunks) + 1 > MAX_OPERATIONS:
            raise ValueError("too many chunks for one transaction")
        self._insert({"PartitionKey": LIST_PARTITION, "RowKey": list_row(campaign), "CampaignId": campaign.campaign_id})
        self._upsert(_active_entity(campaign.campaign_id))
        pk = campaign_pk(campaign.campaign_id)
        operations: list[Any] = [("create", _campaign_entity(campaign))]
        for n, ids in enumerate(chunks):
            operations.append(("create", _chunk_entity(pk, n, ids)))
        results = self._submit(operations)
        return StoredCampaign(campaign, results[0]["etag"])

    def get(self, campaign_id: str) -> StoredCampaign | None:
        entity = self._get(campaign_pk(campaign_id), CAMPAIGN_ROW)
        if entity is None:
            return None
        return StoredCampaign(Campaign.from_json(entity["Data"]), entity.metadata["etag"])

    def replace(self, campaign: Campaign, etag: str) -> StoredCampaign:
        return StoredCampaign(campaign, self._update(_campaign_entity(campaign), etag))

    def list_page(self, top: int, after: str | None) -> tuple[list[Campaign], str | None]:
        """Newest first: `top` campaigns after the list row `after`, and the row to continue after."""
        query = f"PartitionKey eq '{LIST_PARTITION}'" + (" and RowKey gt @after" if after else "")
        rows: list[str] = []
        ids: list[str] = []
        more = False
        for entity in self._query(query, {"after": after} if after else {}, page_size=top + 1):
            if len(ids) == top:
                more = True
                break
            rows.append(entity["RowKey"])
            ids.append(entity["CampaignId"])
        found = self._in_parallel([lambda c=c: self.get(c) for c in ids])
        campaigns = [stored.campaign for stored in found if stored is not None]
        return campaigns, rows[-1] if more else None

    # --- campaigns with work ---------------------------------------------------------------------

    def active(self) -> list[tuple[str, datetime, str]]:
        """(campaign id, when the entry was written, its ETag) of every campaign with work."""
        return [
            (e["RowKey"], e.metadata.get("timestamp") or datetime.now(UTC), e.metadata["etag"])
            for e in self._query(f"PartitionKey eq '{ACTIVE_PARTITION}'", {}, page_size=1000)
        ]

    def mark_active(self, campaign_id: str) -> None:
        self._upsert(_active_entity(campaign_id))

    def drop_active(self, campaign_id: str, etag: str | None = None) -> bool:
        return self._delete(ACTIVE_PARTITION, campaign_id, etag)

    # --- staged customer ids ---------------------------------------------------------------------

    def stage_chunk(self, stored: StoredCampaign, updated: Campaign, customers: Sequence[str]) -> StoredCampaign:
        """A page of discovered customers as chunk `stored.campaign.chunks`, with the campaign's
        new state (its next link, counts) in the same transaction."""
        pk = campaign_pk(updated.campaign_id)
        operations = [
            _update_op(_campaign_entity(updated), stored.etag),
            ("create", _chunk_entity(pk, stored.campaign.chunks, customers)),
        ]
        return StoredCampaign(updated, self._submit(operations)[0]["etag"])

    def chunk(self, campaign_id: str, n: int) -> list[str] | None:
        entity = self._get(campaign_pk(campaign_id), f"{CHUNK_PREFIX}{n:05d}")
        if entity is None:
            return None
        ids: list[str] = []
        for index in range(CHUNK_SIZE // _IDS_PER_PROPERTY + 1):
            value = entity.get(f"Ids{index}")
            if value:
                ids.extend(value.split(","))
        return ids

    def expand(self, campaign_id: str, n: int, customers: Sequence[str], first_queue: str) -> Expansion:
        """Insert a member (`pending`) and its queue entry for each customer of chunk `n`, 50 to a
        transaction; a transaction that finds a member there is redone one customer at a time."""
        pk = campaign_pk(campaign_id)
        new = already = duplicates = 0
        size = MAX_OPERATIONS // 2
        for start in range(0, len(customers), size):
            part = customers[start : start + size]
            operations: list[Any] = []
            for customer in part:
                operations.extend(_join_ops(pk, customer, n, first_queue))
            if self._try_submit(operations):
                new += len(part)
                continue
            for customer in part:
                if self._try_submit(_join_ops(pk, customer, n, first_queue)):
                    new += 1
                    continue
                existing = self.member(campaign_id, customer)
                if existing is not None and existing.member.chunk == n:
                    already += 1
                else:
                    duplicates += 1
        return Expansion(new, already, duplicates)

    def finish_chunk(self, stored: StoredCampaign, updated: Campaign, n: int) -> StoredCampaign:
        pk = campaign_pk(updated.campaign_id)
        operations = [
            _update_op(_campaign_entity(updated), stored.etag),
            ("delete", {"PartitionKey": pk, "RowKey": f"{CHUNK_PREFIX}{n:05d}"}),
        ]
        return StoredCampaign(updated, self._submit(operations)[0]["etag"])

    # --- members and queues --------------------------------------------------------------------

    def member(self, campaign_id: str, customer_id: str) -> StoredMember | None:
        entity = self._get(campaign_pk(campaign_id), member_row(customer_id))
        return None if entity is None else _stored_member(entity)

    def members(self, campaign_id: str, ids: Sequence[str]) -> list[StoredMember | None]:
        return self._in_parallel([lambda c=c: self.member(campaign_id, c) for c in ids])

    def queue(self, campaign_id: str, queue: str, top: int, due_by: datetime | None = None) -> list[QueueEntry]:
        """The first `top` entries of a queue (for `follow`, those due by `due_by`)."""
        low = f"{QUEUE_PREFIX}{queue}|"
        high = low[:-1] + "}" if due_by is None else f"{low}{due_by.astimezone(UTC):%Y%m%dT%H%M%S}}}"
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        found: list[QueueEntry] = []
        parameters = {"pk": campaign_pk(campaign_id), "low": low, "high": high}
        for entity in self._query(query, parameters, page_size=top, select=["RowKey"]):
            row = entity["RowKey"]
            found.append(QueueEntry(row, row.rsplit("|", 1)[1], entity.metadata["etag"]))
            if len(found) >= top:
                break
        return found

    def members_page(
        self, campaign_id: str, state: str | None, top: int, after: str | None
    ) -> tuple[list[Member], str | None]:
        conditions = ["PartitionKey eq @pk", "RowKey gt @after", "RowKey lt @high"]
        parameters: dict[str, Any] = {"pk": campaign_pk(campaign_id), "after": after or MEMBER_PREFIX, "high": "m}"}
        if state:
            conditions.append("State eq @state")
            parameters["state"] = state
        found: list[Member] = []
        last = None
        more = False
        for entity in self._query(" and ".join(conditions), parameters, page_size=top + 1):
            if len(found) == top:
                more = True
                break
            found.append(_stored_member(entity).member)
            last = entity["RowKey"]
        return found, last if more else None

    def all_members(self, campaign_id: str) -> Iterator[Member]:
        query = "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high"
        parameters = {"pk": campaign_pk(campaign_id), "low": MEMBER_PREFIX, "high": "m}"}
        for entity in self._query(query, parameters, page_size=1000):
            yield _stored_member(entity).member

    def apply(self, stored: StoredCampaign, updated: Campaign, changes: Sequence[MemberChange]) -> StoredCampaign:
        """The campaign's new state and its members' transitions, all or nothing (one
        transaction; `WriteConflict` when any of them changed since read)."""
        pk = campaign_pk(updated.campaign_id)
        operations: list[Any] = [_update_op(_campaign_entity(updated), stored.etag)]
        for change in changes:
            entity = _member_entity(pk, change.member)
            if change.etag is None:
                operations.append(("create", entity))
            else:
                operations.append(_update_op(entity, change.etag))
            for entry in change.leave:
                operations.append(_delete_op(pk, entry.row, entry.etag))
            if change.join:
                operations.append(("create", {"PartitionKey": pk, "RowKey": change.join}))
        if len(operations) > MAX_OPERATIONS:
            raise ValueError("too many operations for one transaction")
        return StoredCampaign(updated, self._submit(operations)[0]["etag"])

    # --- the transaction primitive ------------------------------------------------------------

    def _submit(self, operations: list[Any]) -> list[dict[str, Any]]:
        """One entity-group transaction; `WriteConflict` when a condition failed (nothing done)."""
        from azure.data.tables import TableTransactionError

        try:
            return [dict(result) for result in self._table.submit_transaction(operations)]
        except TableTransactionError as error:
            if error.status_code in (404, 409, 412):
                raise WriteConflict("campaign") from None
            raise storage_error(error) from None
        except Exception as error:
            raise storage_error(error) from None

    def _try_submit(self, operations: list[Any]) -> bool:
        with contextlib.suppress(WriteConflict):
            self._submit(operations)
            return True
        return False


def _update_op(entity: dict[str, Any], etag: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    return (
        "update",
        entity,
        {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified},
    )


def _delete_op(pk: str, row: str, etag: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    from azure.core import MatchConditions

    return (
        "delete",
        {"PartitionKey": pk, "RowKey": row},
        {"etag": etag, "match_condition": MatchConditions.IfNotModified},
    )


def _campaign_entity(campaign: Campaign) -> dict[str, Any]:
    return {
        "PartitionKey": campaign_pk(campaign.campaign_id),
        "RowKey": CAMPAIGN_ROW,
        "State": campaign.state,
        "Data": campaign.to_json(),
    }


def _active_entity(campaign_id: str) -> dict[str, Any]:
    return {"PartitionKey": ACTIVE_PARTITION, "RowKey": campaign_id}


def _chunk_entity(pk: str, n: int, ids: Sequence[str]) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": f"{CHUNK_PREFIX}{n:05d}", "Count": len(ids)}
    for index in range(0, len(ids), _IDS_PER_PROPERTY):
        entity[f"Ids{index // _IDS_PER_PROPERTY}"] = ",".join(ids[index : index + _IDS_PER_PROPERTY])
    return entity


def _join_ops(pk: str, customer_id: str, n: int, first_queue: str) -> list[Any]:
    row = queue_row(first_queue, customer_id)
    member = Member(customer_id=customer_id.lower(), chunk=n, queue_row=row)
    return [("create", _member_entity(pk, member)), ("create", {"PartitionKey": pk, "RowKey": row})]


_MEMBER_TIMES = ("assessed_at", "requested_at", "finished_at", "updated_at")


def _member_entity(pk: str, member: Member) -> dict[str, Any]:
    data = {
        "chunk": member.chunk,
        "companyName": member.company_name,
        "reason": member.reason,
        "upgradeId": member.upgrade_id,
        "requestId": member.request_id,
        "queueRow": member.queue_row,
        "attempts": member.attempts,
        "lastError": member.last_error,
        **{name: iso(getattr(member, name)) for name in _MEMBER_TIMES},
    }
    return {
        "PartitionKey": pk,
        "RowKey": member_row(member.customer_id),
        "State": member.state,
        "Data": json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":")),
    }


def _stored_member(entity: Any) -> StoredMember:
    data = json.loads(entity.get("Data") or "{}")
    member = Member(
        customer_id=entity["RowKey"][len(MEMBER_PREFIX) :],
        state=entity["State"],
        chunk=int(data.get("chunk", -1)),
        company_name=data.get("companyName"),
        reason=data.get("reason"),
        upgrade_id=data.get("upgradeId"),
        request_id=data.get("requestId"),
        queue_row=data.get("queueRow"),
        attempts=int(data.get("attempts", 0)),
        last_error=data.get("lastError"),
        **{name: parse_time(data.get(name)) for name in _MEMBER_TIMES},
    )
    return StoredMember(member, entity.metadata["etag"])


def beside(store: TableOps) -> CampaignStore:
    """The campaign store on the same table (and connection pool) as the request store."""
    return CampaignStore(store._table)
