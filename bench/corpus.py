"""The management benchmarks' database (issue 16): a million stored messages with their search
index rows, 100,000 conversations in one tenant and a 10,000-message conversation for the
dashboard page, seeded straight into a migrated SQLite file and cached between runs.

Text: words drawn from a Zipf vocabulary (rank r has weight 1/r) of VOCABULARY words, the most
frequent ones common English words and the rest made-up words of two to four syllables, 20–40
words a message; CJK_SHARE of the messages are Chinese (2-character words from their own Zipf
list, no spaces). Conversations hold MESSAGES_PER_CONV messages, alternating user and assistant,
titled "<topic> <word> <word>" (TOPICS topics: a title filter matches 1 in 20) with metadata
{"team": "team-K"} (K in 0..TEAMS-1: a metadata filter matches 1 in 20) — and one conversation,
"solo-0", holding {"team": "solo"} (a filter matching one conversation in the whole list).
Activity times one minute apart, the newest last.

The search rows are written as Tether writes them (src/tether/store/sqlite_search.py,
migration 0006): every user/assistant/tool text into `search_words`, texts holding CJK
characters also into `search_cjk`, rowid = conversation_pk << 32 | seq (summaries at
2^31 + epoch), each row's `tenant` column its tenant's token (store/indexing.py). One
transaction, `executemany` per batch. The file is cached in the temp dir under a key made of
SEED_VERSION, the sizes, the migrations' text and store/indexing.py's (what a row holds), so a
second run reuses it (a copy of it: the server runs on the copy) and a change of the schema or
of the rows' format seeds afresh. Whoever changes the format updates this file too.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import procs
from tether.compaction.summary import PROMPT_VERSION
from tether.store.indexing import SUMMARY_SLOT, has_cjk, rowid, tenant_token

SEED_VERSION = 2  # bump when the generated rows change: the cache is keyed by it
TENANT = "default"
VOCABULARY = 5000
CJK_SHARE = 0.05
MESSAGES_PER_CONV = 10
TOPICS = 20
TEAMS = 20
PAGE_MESSAGES = 10_000
PAGE_ID = "page-10000"
MIGRATIONS = procs.ROOT / "src/tether/store/migrations/sqlite"
INDEXING = procs.ROOT / "src/tether/store/indexing.py"

COMMON_TEXT = (
    "the to and of a in is it you that for on with this be are not have was as at we can "
    "but or if they your all will from there what so an my one when me our about just by "
    "more do up out no has like would some then them which time get their been were could "
    "now how other only new any also into see make these first well way than even back use "
    "after work because good need over where most through know still here should must take "
    "again each file check service log deploy config error request server user change run "
    "test build release version update data issue fix team review branch commit cluster "
    "node queue cache database query index table report metric alert latency memory disk "
    "network backup restore ticket customer invoice order payment account message thread"
)
COMMON = COMMON_TEXT.split()
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["ar", "el", "in", "on", "us"]
CJK_TEXT = (
    "部署 日志 服务 配置 错误 用户 数据 系统 问题 检查 更新 版本 测试 发布 网络 请求 响应 "
    "时间 文件 任务 团队 客户 订单 支付 账户 消息 缓存 索引 查询 报告 指标 告警 延迟 内存 "
    "磁盘 备份 恢复 集群 节点 队列 分支 提交 审查 修复 变更 运行 构建 环境 权限 密钥 证书 "
    "接口 模块 函数 参数 结果 状态 进度 计划 会议 文档 说明 需求 设计 方案 风险 成本 预算 "
    "合同 供应 物流 仓库 库存 采购 销售 市场 产品 功能 性能 安全 监控 负载 流量 带宽 存储"
)
CJK_WORDS = CJK_TEXT.split()


def vocabulary() -> list[str]:
    """VOCABULARY distinct words, most frequent first: COMMON, then made-up words."""
    rng = random.Random(1)
    words = list(COMMON)
    seen = set(words)
    while len(words) < VOCABULARY:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3, 3, 3, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def zipf_table(words: list[str], size: int = 1 << 20) -> list[str]:
    """A table in which word r appears ~size/(r·H) times: uniform picks from it are Zipf."""
    h = sum(1 / r for r in range(1, len(words) + 1))
    table: list[str] = []
    for r, w in enumerate(words, 1):
        table += [w] * max(1, round(size / (r * h)))
    return table


class Text:
    """The message text generator (deterministic for a seed)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary()
        self.table = zipf_table(self.words)
        self.cjk = zipf_table(CJK_WORDS, 1 << 14)

    def message(self) -> str:
        rng = self.rng
        if rng.random() < CJK_SHARE:
            picked = rng.choices(self.cjk, k=rng.randint(12, 24))
            parts = ["".join(picked[i : i + 4]) for i in range(0, len(picked), 4)]
            return "，".join(parts) + "。"
        words = rng.choices(self.table, k=rng.randint(20, 40))
        return words[0].capitalize() + " " + " ".join(words[1:]) + "."


@dataclass
class Corpus:
    """What the seeded file holds and where it is (the figures cached with it)."""

    path: Path
    conversations: int
    messages: int
    search_rows: int
    cjk_rows: int
    seeded_s: float
    mib: float
    cached: bool = False
    copy_s: float = 0.0
    matches: dict[str, int] = field(default_factory=dict)  # query → rows it matches


def cache_key(conversations: int) -> str:
    h = hashlib.sha1(f"v{SEED_VERSION}:{conversations}:{PAGE_MESSAGES}".encode())
    for f in [*sorted(MIGRATIONS.glob("*.sql")), INDEXING]:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def prepared(workdir: Path, conversations: int, queries: list[str]) -> Corpus:
    """The seeded database, copied into `workdir`: from the cache when it holds this key,
    else seeded (and cached). Stale cache entries (other keys) are removed."""
    root = Path(tempfile.gettempdir())
    cache = root / f"tether-bench-corpus-{conversations}-{cache_key(conversations)}"
    meta = cache / "corpus.json"
    cached = meta.exists()
    if not cached:
        for old in root.glob(f"tether-bench-corpus-{conversations}-*"):
            shutil.rmtree(old, ignore_errors=True)  # an older seed or schema of this size
        cache.mkdir(parents=True, exist_ok=True)
        corpus = seed(cache / "manage.db", conversations)
        corpus.matches = count_matches(corpus.path, queries)
        data = {k: v for k, v in asdict(corpus).items() if k != "path"}
        meta.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    data = json.loads(meta.read_text())
    missing = [q for q in queries if q not in data["matches"]]
    if missing:  # a query added since: count it (the file is read-only to this)
        data["matches"].update(count_matches(cache / "manage.db", missing))
        meta.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    target = workdir / "manage.db"
    t0 = time.perf_counter()
    shutil.copyfile(cache / "manage.db", target)
    copy_s = time.perf_counter() - t0
    data.update(cached=cached, copy_s=copy_s)
    return Corpus(path=target, **data)


def count_matches(db: Path, queries: list[str]) -> dict[str, int]:
    """Rows of the index each query's MATCH expression (as Tether builds it) matches."""
    from tether.engine.search import build

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out: dict[str, int] = {}
    try:
        for q in queries:
            sq = build(q, group=True, limit=20, filters=None)
            table = "search_cjk" if sq.cjk else "search_words"
            out[q] = int(
                conn.execute(
                    f"SELECT count(*) FROM {table} WHERE {table} MATCH ?", (sq.match,)
                ).fetchone()[0]
            )
    finally:
        conn.close()
    return out


def seed(db: Path, conversations: int, batch: int = 5000) -> Corpus:
    """Migrate `db`, then write `conversations` conversations of MESSAGES_PER_CONV messages
    and the page conversation, with their search rows, in one transaction."""
    t0 = time.perf_counter()
    db.unlink(missing_ok=True)
    procs.migrate(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: the FTS5 merges stay in memory
    text = Text(seed=16)
    now = time.time()
    start = now - (conversations + 10) * 60.0
    counts = {"messages": 0, "words": 0, "cjk": 0}
    conn.execute("BEGIN")
    conn.execute("INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)", (TENANT, start))
    for first in range(0, conversations, batch):
        convs, msgs, words, cjk = [], [], [], []
        for n in range(first, min(conversations, first + batch)):
            pk = n + 1
            at = start + n * 60.0
            team = "solo" if n == conversations // 2 else f"team-{n % TEAMS}"
            cid = "solo-0" if team == "solo" else f"conv-{n}"
            topic = text.words[100 + n % TOPICS]  # a mid-frequency word, 1 in TOPICS titles
            title = f"{topic.capitalize()} {' '.join(text.rng.choices(text.table, k=2))}"
            meta = orjson.dumps({"team": team}).decode()
            convs.append(
                (pk, TENANT, cid, title, "scripted", MESSAGES_PER_CONV,
                 MESSAGES_PER_CONV // 2, at - 600, at, meta)
            )  # fmt: skip
            for seq in range(1, MESSAGES_PER_CONV + 1):
                body = text.message()
                role = "user" if seq % 2 else "assistant"
                msgs.append((pk, seq, role, orjson.dumps(body).decode(), _tokens(body),
                             at - 600 + seq))  # fmt: skip
                row = (rowid(pk, seq), body)
                words.append(row)
                if has_cjk(body):
                    cjk.append(row)
        _insert(conn, convs, msgs, words, cjk, counts)
    page_conversation(conn, text, conversations + 1, now, counts)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return Corpus(
        path=db,
        conversations=conversations + 1,
        messages=counts["messages"],
        search_rows=counts["words"],
        cjk_rows=counts["cjk"],
        seeded_s=time.perf_counter() - t0,
        mib=db.stat().st_size / procs.MIB,
    )


def _tokens(body: str) -> int:
    """An estimate (the real count is not needed for these routes): ~4/3 tokens a word."""
    return 4 + (len(body.split()) * 4 + 2) // 3 if " " in body else 4 + len(body) // 2


def _insert(
    conn: sqlite3.Connection,
    convs: list[tuple[Any, ...]],
    msgs: list[tuple[Any, ...]],
    words: list[tuple[int, str]],
    cjk: list[tuple[int, str]],
    counts: dict[str, int],
) -> None:
    if convs:
        conn.executemany(
            "INSERT INTO conversations (pk, tenant_id, id, title, model, last_seq, turn_count, "
            "created_at, updated_at, metadata) VALUES (?,?,?,?,?,?,?,?,?,?)",
            convs,
        )
    conn.executemany(
        "INSERT INTO messages (conversation_pk, seq, role, content, tokens, created_at) "
        "VALUES (?,?,?,?,?,?)",
        msgs,
    )
    token = tenant_token(TENANT)  # each index row names its tenant (migration 0006)
    conn.executemany(
        "INSERT INTO search_words (rowid, body, tenant) VALUES (?, ?, ?)",
        [(r, b, token) for r, b in words],
    )
    if cjk:
        conn.executemany(
            "INSERT INTO search_cjk (rowid, body, tenant) VALUES (?, ?, ?)",
            [(r, b, token) for r, b in cjk],
        )
    counts["messages"] += len(msgs)
    counts["words"] += len(words)
    counts["cjk"] += len(cjk)


SUMMARY = (
    "## Goal\nKeep the release train on schedule.\n## Decisions made\n{body}\n"
    "## Open tasks\nCheck the deploy log of every service after each release."
)


def page_conversation(
    conn: sqlite3.Connection, text: Text, pk: int, now: float, counts: dict[str, int]
) -> None:
    """PAGE_ID: PAGE_MESSAGES messages, the newest activity of all, with a tool call and its
    result every 10 messages and two checkpoints (at half and at all but the last 10)."""
    msgs: list[tuple[Any, ...]] = []
    words: list[tuple[int, str]] = []
    cjk: list[tuple[int, str]] = []
    t = now - PAGE_MESSAGES * 2.0
    for seq in range(1, PAGE_MESSAGES + 1):
        k = seq % 10
        body: str | None = text.message()
        calls = call_id = name = None
        role = "user" if k in (1, 5, 7, 9) else "assistant"
        if k == 2:  # the assistant calls a tool ...
            call_id = f"call_{seq}"
            calls = orjson.dumps(
                [{"id": call_id, "type": "function",
                  "function": {"name": "read_log", "arguments": f'{{"line": {seq}}}'}}]
            ).decode()  # fmt: skip
            body = None
        elif k == 3:  # ... and its result
            role, call_id, name = "tool", f"call_{seq - 1}", "read_log"
        msgs.append((pk, seq, role, None if body is None else orjson.dumps(body).decode(),
                     calls, call_id, name, _tokens(body or "call"), t + seq * 2.0))  # fmt: skip
        if body is not None:
            words.append((rowid(pk, seq), body))
            if has_cjk(body):
                cjk.append((rowid(pk, seq), body))
    conn.execute(
        "INSERT INTO conversations (pk, tenant_id, id, title, model, last_seq, turn_count, "
        "epoch, created_at, updated_at, metadata) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (pk, TENANT, PAGE_ID, "The long one: 10,000 messages", "scripted", PAGE_MESSAGES,
         PAGE_MESSAGES // 2, 2, t, now, orjson.dumps({"team": "team-0"}).decode()),
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO messages (conversation_pk, seq, role, content, tool_calls, tool_call_id, "
        "name, tokens, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
        msgs,
    )
    total = sum(m[7] for m in msgs)
    for epoch, covers in ((1, PAGE_MESSAGES // 2), (2, PAGE_MESSAGES - 10)):
        summary = SUMMARY.format(body=text.message())
        before = sum(m[7] for m in msgs[:covers]) if epoch == 1 else total
        conn.execute(
            "INSERT INTO checkpoints (conversation_pk, epoch, covers_through_seq, "
            "prune_through_seq, summary, ledger, tokens_before, tokens_after, model, "
            "prompt_version, stats, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (pk, epoch, covers, covers, summary, "[]", before, 900, "scripted", PROMPT_VERSION,
             orjson.dumps({"kind": "summary", "seeded": True}).decode(), t + covers * 2.0),
        )  # fmt: skip
        words.append((rowid(pk, SUMMARY_SLOT + epoch), summary))
    token = tenant_token(TENANT)  # each index row names its tenant (migration 0006)
    conn.executemany(
        "INSERT INTO search_words (rowid, body, tenant) VALUES (?, ?, ?)",
        [(r, b, token) for r, b in words],
    )
    if cjk:
        conn.executemany(
            "INSERT INTO search_cjk (rowid, body, tenant) VALUES (?, ?, ?)",
            [(r, b, token) for r, b in cjk],
        )
    counts["messages"] += len(msgs)
    counts["words"] += len(words)
    counts["cjk"] += len(cjk)
