# ruff: noqa: RUF001  (Cyrillic and full-width letters in the chat vocabularies)
"""Compression of the event stream, measured: none, shared deflate, per-connection deflate.

    .venv/bin/python bench/compression.py            # ~5 minutes on 2 idle cores
    .venv/bin/python bench/compression.py --quick    # one short repetition, a smoke test

Frames: real frames of our stream.  An in-process server (``open_server``)
gets a public room and a few users; messages of about 60, 200, 1,000 and
4,000 characters of generated mixed-language chat text are posted through
the message service, and a real WebSocket client (wsproto, over TCP) records
the ``TextMessagesCreated`` and ``RoomUpdated`` frames its stream receives,
in order.  Each size has its own session of ``POSTS`` posts; the first
``WARMUP`` posts only fill the per-connection compressors' history.

Strategies (``STRATEGIES``):

- ``none``: the frame is encoded and framed once and the bytes are shared by
  every recipient (``FrameCache``: ``text_frame(frame.encode())``).
- ``shared``: permessage-deflate with ``server_no_context_takeover``: a
  fresh raw-deflate context per distinct payload (``zlib.compressobj``,
  ``wbits=-15``, ``flush(Z_SYNC_FLUSH)``, trailing ``00 00 ff ff``
  stripped, RSV1 set; RFC 7692), once per event, shared by all recipients.
- ``shared-reuse``: the same bytes' worth from one long-lived compressor
  whose every message ends with ``Z_FULL_FLUSH`` (no back-reference crosses
  it, so each message inflates on its own), which saves the allocation of a
  context per event.
- ``per-conn``: permessage-deflate with context takeover, what most servers
  negotiate by default (wsproto's settings, hence hypercorn's): every
  recipient has its own compressor, so each frame is compressed once per
  recipient.  N contexts are fed the same sequence of frames, event by event
  (recipients inner, as the broker fans out).
- ``per-conn-12/5``: the same with websockets' lighter defaults (window 12
  bits, memLevel 5).

Figures: wire bytes per frame and the share left (compressed /
uncompressed); server CPU µs per delivery for N = 200 and 1,000 recipients
(shared strategies pay once per event and divide by N, per-connection ones
pay per recipient); the kernel's cost of writing one frame of that size to a
loopback TCP socket (every strategy pays it per delivery); the client's CPU
µs to inflate one frame (a fresh ``decompressobj`` per message for shared
strategies, one persistent context for per-connection ones) and, for scale,
to ``json.loads`` it.  Every figure is the median of ``REPS`` repetitions,
each timed with ``time.perf_counter_ns`` over many iterations; repetition r
of every figure runs before repetition r + 1 of any, and each records the
share of its wall time the thread was on a CPU, so other load on the machine
shows.  Correctness: every frame of every session is fed to wsproto's and
websockets' permessage-deflate decoders, negotiated as the strategy needs,
and must come back byte for byte.

Client frames: what negotiating permessage-deflate would mean for the
``max_client_frame`` limit, shown with wsproto itself (a small compressed
frame is inflated inside wsproto before our transport can count its size).

Writes ``bench/compression-results.json`` and prints a table.  See the
section "Compression: measured, and why the stream does not compress" of
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import logging
import os
import platform
import random
import socket
import statistics
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import trio
from bench_common import tune_gc
from websockets.exceptions import PayloadTooBig
from websockets.extensions.permessage_deflate import PerMessageDeflate as WsDeflate
from websockets.frames import Frame as WsFrame
from websockets.streams import StreamReader
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

import trio_events
from trio_events.transport.websocket import RECEIVE_SIZE, text_frame

HERE = Path(__file__).resolve().parent
OUT = HERE / "compression-results.json"

SIZES = (60, 200, 1000, 4000)  # characters of chat text per message
ROOM_SESSION = 200  # the RoomUpdated row: frames of the 200-character session
RECIPIENTS = (200, 1000)
WARMUP = 8  # posts per session that only fill per-connection history
POSTS = 32  # posts per session (WARMUP + timed)
REPS = 5
LEVEL = zlib.Z_DEFAULT_COMPRESSION  # what wsproto and zlib use (level 6)
WBITS = 15
TAIL = b"\x00\x00\xff\xff"
SEED = 20261130


# ---------------------------------------------------------------------------
# Chat text: mixed-language sentences from Zipf-weighted vocabularies


def _words(text: str) -> list[str]:
    return text.split()


EN = _words("""
the I to a and you it is that of in we for this on be not have with can
just do it's so but what was my if at are will me all about they get one
there now no like think know yes ok was from out up an or as do going
thanks need still would should could time see good work today here how
when then also let's did don't I'm fix PR build test deploy release branch
merge review ticket issue bug server client stream event room message
user login token config staging prod production logs error timeout retry
meeting tomorrow morning afternoon week sprint standup demo call minutes
doc docs draft link update patch change commit main master rollback flag
feature cache database query index migration backup restore alert page
latency memory CPU disk queue worker job cron pipeline CI green red flaky
looks right wrong weird works broken fine great nice sure sorry maybe
probably actually really quick small big new old first last next same
again later soon already yet never always sometimes before after while
because since until though unless until where which who why whose whom
please check look try run add remove move rename push pull open close
write read send reply ask tell show share wait help start stop finish
team customer support sales design product manager lead folks everyone
someone anyone nobody something anything nothing everything more less
most least much many few lot lots bit thing things way ways day days
number numbers version versions step steps part parts case cases point
question answer problem solution idea plan reason result results end
lunch coffee break weekend holiday vacation office remote home travel
""")

DE = _words("""
ich du er sie es wir ihr das die der und ist nicht ein eine zu mit auf
für von den dem ja nein doch noch schon mal heute morgen gestern gleich
kurz bitte danke gut super passt klar genau okay vielleicht eigentlich
wirklich leider hab habe hast hat haben sind war wäre kann kannst können
muss müssen soll sollen will wollen wird werden mach machen schau schauen
teste testen läuft lief kaputt fehler server build deploy ticket branch
änderung review besprechung termin woche nachmittag vormittag kollegen
kunden datenbank abfrage speicher warteschlange protokoll einstellung
wieder immer nie oft manchmal dann danach vorher aber oder weil wenn dass
ob wie was wer wo warum hier dort alles nichts etwas viel wenig mehr
""")

FR = _words("""
je tu il elle on nous vous ils le la les un une des de du et est pas ne
que qui pour dans sur avec par ce cette ces mon ton son oui non merci
bien bon super parfait d'accord peut-être vraiment encore déjà toujours
jamais souvent aujourd'hui demain hier matin soir semaine réunion client
serveur erreur bug ticket branche déploiement version test tests build
base données requête mémoire file journal réglage équipe collègue projet
faire fait vais va allons regarde regarder vérifier corriger lancer
relancer envoyer répondre attendre fini terminé cassé marche fonctionne
mais ou donc car quand si comme alors après avant pendant depuis tout
rien quelque chose beaucoup peu plus moins trop assez ici là pourquoi
""")

ES = _words("""
yo tú él ella nosotros ellos el la los las un una de del y es no que en
para con por este esta eso sí gracias bien vale claro perfecto quizás
todavía ya siempre nunca hoy mañana ayer tarde semana reunión cliente
servidor error fallo ticket rama despliegue versión prueba pruebas base
datos consulta memoria cola registro equipo proyecto hacer hago voy vamos
mira revisar arreglar lanzar enviar responder esperar terminado roto
funciona pero o porque cuando si como entonces después antes durante
todo nada algo mucho poco más menos aquí allí por qué
""")

RU = _words("""
я ты он она мы вы они это что не и в на с по для как так да нет уже
ещё сейчас сегодня завтра вчера утром вечером неделе спасибо хорошо
отлично ладно понял поняла конечно наверное может быть правда просто
сервер ошибка баг тикет ветка деплой релиз версия тест тесты сборка
база данных запрос память очередь логи настройка команда коллеги проект
клиент встреча созвон посмотрю посмотри проверю проверь починил починить
запустить перезапустить отправил ответил подожди готово сломалось
работает но или потому что когда если тогда после до пока всё ничего
что-то много мало больше меньше здесь там почему где кто
""")

JA = _words("""
は が を に で と の も から まで です ます でした ました ません ない ね よ か
けど ので って こと もの これ それ あれ どれ ここ そこ 今日 明日 昨日 今週
来週 午前 午後 会議 資料 確認 修正 対応 共有 レビュー テスト ビルド
デプロイ サーバー エラー ログ 設定 本番 環境 データベース メモリ 遅延
チケット ブランチ 問題 原因 結果 予定 時間 少し ちょっと まだ もう すぐ
たぶん やはり ありがとうございます すみません お疲れさまです 了解です
よろしくお願いします 大丈夫です 見て 見ます 書いて 送ります 待って
直しました 動かない 落ちた 再起動 しました します して いる いた あります
""")

# Recurring word groups: real text repeats phrases, not only words.
PHRASES: dict[str, str] = {
    "en": """I think|in the|on the|of the|to the|for the|it is|it was|I don't know|
        let me check|I'll take a look|as far as I know|does anyone know|at the moment|
        by the way|thank you|thanks a lot|sounds good|makes sense|not sure|I guess|
        as well|at least|for now|right now|in production|on staging|the build is|
        the tests are|the server is|we need to|we should|can you|could you|do you|
        I'm not sure|I have a|there is a|there are|it looks like|looks good to me|
        one more thing|end of the day|this morning|this afternoon|next week|last week|
        in a minute|be right back|on my way|give me a sec|any idea why|what do you think|
        out of memory|connection refused|works on my machine|after the deploy|
        before the release|the same issue|for some reason|a couple of|a lot of|
        kind of|sort of|you know|I mean|to be honest|good catch|my bad""",
    "de": """ich glaube|ich schaue|auf dem|in der|mit dem|für die|das ist|es ist|
        gibt es|kannst du|können wir|ich habe|wir haben|heute Nachmittag|morgen früh|
        nach dem Deploy|vor dem Release|keine Ahnung|alles klar|passt schon|
        schau mal|kurze Frage|danke dir|bis gleich|bis morgen""",
    "fr": """je pense|je regarde|dans la|sur le|avec le|pour la|c'est|il y a|
        est-ce que|tu peux|on peut|j'ai|on a|cet après-midi|demain matin|après le
        déploiement|avant la release|aucune idée|pas de souci|ça marche|je vois|
        petite question|merci beaucoup|à tout à l'heure|à demain""",
    "es": """creo que|en la|en el|con el|para la|es que|hay un|puedes|podemos|
        tengo que|hemos|esta tarde|mañana por la mañana|después del despliegue|
        ni idea|no pasa nada|de acuerdo|una pregunta|muchas gracias|hasta luego""",
    "ru": """я думаю|кажется|на проде|на стейдже|в логах|после деплоя|перед релизом|
        у меня|у нас|можешь посмотреть|можно ли|есть ли|я посмотрю|не знаю|
        спасибо большое|всё ок|без понятия|сегодня вечером|завтра утром|
        короткий вопрос|до завтра|сейчас посмотрю""",
    "ja": """確認します|修正しました|対応します|共有します|見てもらえますか|
        ありがとうございます|よろしくお願いします|少し遅れます|後で見ます|
        本番環境で|ログを見ると|原因はまだ|わかりました""",
}
PHRASE_SHARE = 0.3  # of word tokens that are a phrase instead


NAMES = _words("""
alice bob carla dmitri eva farid greta hiro ines jonas kasia luca mei
noah olga pablo quinn rosa sven tomoko ulrich vera wen yusuf zoe
""")

EMOJI = ["🙂", "👍", "🎉", "😅", "🔥", "🙏", "🚀", "😂", "✅", "👀", "🤔", "☕"]
REPOS = ["chat-server", "web-client", "infra", "billing", "mobile-app", "docs"]
IDENTS = [
    "retry_after",
    "send_queue_size",
    "Room.update()",
    "max_replay",
    "parse_batch()",
    "FrameCache",
    "user_id",
    "await stream.send_all(data)",
    "SELECT count(*) FROM events",
    "git rebase -i main",
    "kubectl rollout status",
    "npm run build",
]

# language, weight, words, separator between words, sentence end
LANGUAGES: tuple[tuple[str, float, list[str], str, str], ...] = (
    ("en", 0.50, EN, " ", "."),
    ("de", 0.12, DE, " ", "."),
    ("fr", 0.10, FR, " ", "."),
    ("es", 0.08, ES, " ", "."),
    ("ru", 0.12, RU, " ", "."),
    ("ja", 0.08, JA, "", "。"),
)


def _zipf(words: Sequence[str]) -> list[float]:
    """Cumulative Zipf-Mandelbrot weights by list position (roughly by frequency)."""
    total = 0.0
    cumulative = []
    for rank in range(len(words)):
        total += 1.0 / (rank + 2.7)
        cumulative.append(total)
    return cumulative


class ChatText:
    """Seeded generator of chat text: a main language per message, sentences
    of 3 to 18 Zipf-weighted words, code-switching, mentions, numbers, times,
    versions, issue numbers, inline code, links and emoji."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._weights = {lang: _zipf(words) for lang, _, words, _, _ in LANGUAGES}
        self._phrases = {
            lang: [p.strip() for p in text.split("|")] for lang, text in PHRASES.items()
        }
        self._phrase_weights = {lang: _zipf(p) for lang, p in self._phrases.items()}

    def _token(self, words: list[str], lang: str) -> str:
        rng = self._rng
        roll = rng.random()
        if roll < 0.025:
            return str(rng.choice((rng.randint(2, 99), rng.randint(100, 99_999))))
        if roll < 0.033:
            return f"{rng.randint(7, 19)}:{rng.choice(('00', '15', '30', '45'))}"
        if roll < 0.040:
            return f"#{rng.randint(1000, 9999)}"
        if roll < 0.046:
            return f"v{rng.randint(1, 4)}.{rng.randint(0, 30)}.{rng.randint(0, 12)}"
        if roll < 0.058:
            return f"`{rng.choice(IDENTS)}`"
        if roll < 0.063:
            repo = rng.choice(REPOS)
            kind = rng.choice(("pull", "issues", "commit"))
            ref = rng.randint(10, 4000) if kind != "commit" else f"{rng.getrandbits(40):010x}"
            return f"https://git.example.org/team/{repo}/{kind}/{ref}"
        if roll < 0.063 + PHRASE_SHARE:
            phrases = self._phrases[lang]
            return rng.choices(phrases, cum_weights=self._phrase_weights[lang])[0]
        return rng.choices(words, cum_weights=self._weights[lang])[0]

    def _sentence(self, lang: str) -> str:
        rng = self._rng
        _, _, words, sep, end = next(entry for entry in LANGUAGES if entry[0] == lang)
        count = max(3, min(18, round(rng.gauss(8, 4))))
        tokens = [self._token(words, lang) for _ in range(count)]
        if rng.random() < 0.12:
            tokens.insert(0, "@" + rng.choice(NAMES))
        if sep and rng.random() < 0.3 and count > 5:
            tokens[rng.randrange(2, count - 1)] += ","
        text = sep.join(tokens)
        text = text[0].upper() + text[1:] if sep else text
        roll = rng.random()
        if roll < 0.15:
            text += "?" if sep else "？"
        elif roll < 0.22:
            text += "!" if sep else "！"
        elif roll < 0.3:
            text += ""
        else:
            text += end
        if rng.random() < 0.1:
            text += " " + rng.choice(EMOJI)
        return text

    def message(self, length: int) -> str:
        """About ``length`` characters: whole sentences, the last one cut at a word."""
        rng = self._rng
        langs = [entry[0] for entry in LANGUAGES]
        main = rng.choices(langs, weights=[entry[1] for entry in LANGUAGES])[0]
        parts: list[str] = []
        size = 0
        while size < length:
            lang = main if rng.random() > 0.15 else rng.choice(langs)
            sentence = self._sentence(lang)
            if parts and rng.random() < 0.08:
                parts.append("\n\n")  # a paragraph break in a long message
                size += 2
            elif parts:
                parts.append(" ")
                size += 1
            parts.append(sentence)
            size += len(sentence)
        text = "".join(parts)
        if len(text) > length * 1.1 + 5:
            cut = text.rfind(" ", 0, int(length * 1.05) + 1)
            text = text[:cut] if cut > length // 2 else text[: int(length * 1.05)]
        return text


def _deflated_share(text: str) -> float:
    raw = text.encode()
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -WBITS)
    return len(packer.compress(raw) + packer.flush(zlib.Z_SYNC_FLUSH)) / len(raw)


def calibration(samples: int = 24) -> dict[str, Any]:
    """How well the generated text deflates (fresh context, as strategy 2) against
    real human prose found on every Python installation (the language reference
    in ``pydoc_data.topics``), for each message size: the reader can judge
    whether the generator flatters or penalises compression."""
    gen = ChatText(SEED + 1)
    rng = random.Random(SEED + 2)
    result: dict[str, Any] = {"samples": samples, "sizes": {}}
    prose = ""
    with contextlib.suppress(ImportError):
        from pydoc_data.topics import topics

        prose = "\n".join(topics[key] for key in sorted(topics))
    for size in SIZES:
        shares = [_deflated_share(gen.message(size)) for _ in range(samples)]
        entry = {"generated": statistics.median(shares)}
        if len(prose) > 10 * size:
            starts = [rng.randrange(len(prose) - size) for _ in range(samples)]
            entry["python_docs_prose"] = statistics.median(
                _deflated_share(prose[s : s + size]) for s in starts
            )
        result["sizes"][str(size)] = entry
    return result


# ---------------------------------------------------------------------------
# Real frames from an in-process server


@dataclass
class Session:
    """One session's frames as a subscriber received them, in order."""

    size: int
    frames: list[tuple[str, str]] = field(default_factory=list)  # (type, frame)


class StreamClient:
    """A minimal wsproto client of ``/api/v1/events`` over TCP."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._parts: list[str] = []
        self._messages: list[str] = []

    @classmethod
    async def open(cls, port: int, token: str) -> StreamClient:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        request = Request(
            host=f"127.0.0.1:{port}",
            target="/api/v1/events",
            extra_headers=[(b"authorization", b"Bearer " + token.encode())],
        )
        await client._stream.send_all(client._ws.send(request))
        return client

    async def receive(self) -> str:
        while not self._messages:
            data = await self._stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise RuntimeError("the stream closed")
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, AcceptConnection):
                    continue
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    if event.message_finished:
                        self._messages.append("".join(self._parts))
                        self._parts = []
                elif isinstance(event, Ping):
                    await self._stream.send_all(self._ws.send(event.response()))
                elif not isinstance(event, Message):
                    raise RuntimeError(f"unexpected {event!r}")
        return self._messages.pop(0)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._stream.send_all(self._ws.send(CloseConnection(code=1000)))
        await self._stream.aclose()


async def capture_sessions(sizes: Sequence[int], posts: int) -> list[Session]:
    """Post ``posts`` messages of each size; return the frames a viewer received."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("trio_events").setLevel(logging.WARNING)
    gen = ChatText(SEED)
    with tempfile.TemporaryDirectory(prefix="bench-compression-") as data_dir:
        config = trio_events.load_config(
            None,
            environ={},
            overrides={
                "server": {"host": "127.0.0.1", "port": 0, "data_dir": data_dir},
                "bootstrap": {"admin_password": "bench-admin-password-1"},
                "events": {"send_queue_size": 10_000},
            },
        )
        async with trio_events.open_server(config) as server:
            svc = server.services
            room = await svc.rooms.create(
                None, {"displayName": "platform-team 🚀", "roomType": "Public"}
            )
            room_id = int(room["roomId"])
            users = [
                await svc.users.create_user(None, name, "bench-password-1", name.title(), False)
                for name in NAMES[:12]
            ]
            viewer = users[0]
            await svc.rooms.set_pin(viewer, room_id, True)
            token = await svc.auth.issue_token(viewer.user_id)
            client = await StreamClient.open(server.port, token)
            hello = json.loads(await client.receive())
            if hello.get("type") != "Hello":
                raise RuntimeError(f"expected Hello, got {hello!r}")
            rng = random.Random(SEED)
            sessions = []
            for size in sizes:
                session = Session(size)
                for _ in range(posts):
                    author = rng.choice(users[1:])
                    body: dict[str, Any] = {"content": gen.message(size)}
                    if rng.random() < 0.3:
                        body["markupType"] = "TextMarkdown"
                    await svc.messages.post(author, room_id, body)
                    for _ in range(2):  # TextMessagesCreated, then RoomUpdated
                        frame = await client.receive()
                        session.frames.append((json.loads(frame)["type"], frame))
                sessions.append(session)
            await client.aclose()
    return sessions


# ---------------------------------------------------------------------------
# The strategies


@dataclass(frozen=True)
class Strategy:
    """How the server turns one event's frame into wire bytes."""

    name: str
    kind: str  # "none", "shared" (once per event) or "per-conn" (once per recipient)
    wbits: int = WBITS
    mem_level: int = 8
    reuse: bool = False  # shared only: one long-lived compressor, Z_FULL_FLUSH per message
    about: str = ""


STRATEGIES = (
    Strategy("none", "none", about="frame once, share the bytes (what we do)"),
    Strategy(
        "shared",
        "shared",
        about="server_no_context_takeover: a fresh raw-deflate context per payload, shared",
    ),
    Strategy(
        "shared-reuse",
        "shared",
        reuse=True,
        about="the same, from one long-lived compressor: Z_FULL_FLUSH ends every message "
        "(no back-references across it, so each message inflates on its own; no allocation)",
    ),
    Strategy(
        "per-conn",
        "per-conn",
        about="context takeover, one compressor per recipient "
        "(wsproto's PerMessageDeflate and so hypercorn: window 15 bits, memLevel 8)",
    ),
    Strategy(
        "per-conn-12/5",
        "per-conn",
        wbits=12,
        mem_level=5,
        about="the same with websockets' lighter defaults (window 12 bits, memLevel 5)",
    ),
)


def frame_header(length: int, rsv1: bool) -> bytes:
    """An unmasked final text frame's header (RSV1 marks a compressed message)."""
    first = 0xC1 if rsv1 else 0x81
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def wire_none(frame: str) -> bytes:
    """Strategy none: what ``FrameCache`` does on a miss."""
    return text_frame(frame.encode())


def new_packer(strategy: Strategy) -> Any:
    return zlib.compressobj(LEVEL, zlib.DEFLATED, -strategy.wbits, strategy.mem_level)


def deflate_message(packer: Any, data: bytes, mode: int = zlib.Z_SYNC_FLUSH) -> bytes:
    """One compressed message: deflate, flush, strip ``00 00 ff ff`` (RFC 7692 7.2.1)."""
    body: bytes = packer.compress(data) + packer.flush(mode)
    return frame_header(len(body) - 4, True) + body[:-4]


def shared_encoder(strategy: Strategy) -> Callable[[str], bytes]:
    """The once-per-event encoder of a ``shared`` strategy."""
    if strategy.reuse:
        packer = new_packer(strategy)
        return lambda frame: deflate_message(packer, frame.encode(), zlib.Z_FULL_FLUSH)
    return lambda frame: deflate_message(new_packer(strategy), frame.encode())


def payload_of(wire: bytes) -> bytes:
    """The payload of one unmasked frame (the header's length is trusted)."""
    short = wire[1] & 0x7F
    return wire[2:] if short < 126 else wire[4:] if short == 126 else wire[10:]


# ---------------------------------------------------------------------------
# Frames of a row


@dataclass
class Row:
    """The frames of one table row (one frame type, one session)."""

    name: str
    label: str
    timed: list[str]  # the frames measured
    sequence: list[tuple[str, str]]  # the whole session, for per-connection history
    kind: str  # which frames of ``sequence`` belong to this row

    def is_timed(self, index: int, kind: str) -> bool:
        return index >= 2 * WARMUP and kind == self.kind


def rows_from(sessions: Sequence[Session]) -> list[Row]:
    rows = []
    for session in sessions:
        seq = session.frames
        messages = [f for t, f in seq[2 * WARMUP :] if t == "TextMessagesCreated"]
        label = f"TextMessagesCreated, {session.size:,} chars"
        rows.append(Row(f"text{session.size}", label, messages, seq, "TextMessagesCreated"))
    room_session = next(s for s in sessions if s.size == ROOM_SESSION)
    rooms = [f for t, f in room_session.frames[2 * WARMUP :] if t == "RoomUpdated"]
    rows.append(Row("room", "RoomUpdated", rooms, room_session.frames, "RoomUpdated"))
    return rows


def row_wires(row: Row, strategy: Strategy) -> list[bytes]:
    """The wire bytes of the row's timed frames (for per-conn: one recipient's)."""
    if strategy.kind == "none":
        return [wire_none(f) for f in row.timed]
    if strategy.kind == "shared":
        encode = shared_encoder(strategy)
        return [encode(f) for f in row.timed]
    packer = new_packer(strategy)
    out = []
    for index, (kind, frame) in enumerate(row.sequence):
        wire = deflate_message(packer, frame.encode())
        if row.is_timed(index, kind):
            out.append(wire)
    return out


# ---------------------------------------------------------------------------
# Timing


@dataclass
class Sample:
    """One repetition of one measurement: wall ns per item, and the share of that
    wall time this thread was on a CPU (well below 1: the machine was busy)."""

    ns: float
    cpu_share: float


def timed(measure: Callable[[], float]) -> Sample:
    wall0, cpu0 = time.perf_counter_ns(), time.thread_time_ns()
    ns = measure()
    wall1, cpu1 = time.perf_counter_ns(), time.thread_time_ns()
    return Sample(ns, (cpu1 - cpu0) / max(1, wall1 - wall0))


def ns_per_item(work: Callable[[], int], budget_s: float) -> float:
    """Run ``work`` (which returns how many items it did) for about ``budget_s``;
    return wall ns per item."""
    work()  # warm
    items = 0
    start = time.perf_counter_ns()
    deadline = start + int(budget_s * 1e9)
    while True:
        items += work()
        now = time.perf_counter_ns()
        if now >= deadline:
            return (now - start) / items


def measure_encode(frames: Sequence[str], encode: Callable[[str], bytes], budget: float) -> float:
    """ns per event of a once-per-event encoder."""

    def work() -> int:
        for frame in frames:
            encode(frame)
        return len(frames)

    return ns_per_item(work, budget)


def measure_per_conn(row: Row, strategy: Strategy, recipients: int) -> float:
    """``recipients`` fresh contexts fed the whole session event by event
    (recipients inner, as the broker fans out); ns per delivery over the row's
    timed frames."""
    gc.collect()
    packers = [new_packer(strategy) for _ in range(recipients)]
    spent = 0
    deliveries = 0
    clock = time.perf_counter_ns
    for index, (kind, frame) in enumerate(row.sequence):
        data = frame.encode()
        t0 = clock()
        for packer in packers:
            deflate_message(packer, data)
        t1 = clock()
        if row.is_timed(index, kind):
            spent += t1 - t0
            deliveries += recipients
    return spent / deliveries


def measure_inflate_each(wires: Sequence[bytes], budget: float) -> float:
    """A client of a shared strategy: a fresh decompressor per message, as
    wsproto and websockets do under server_no_context_takeover."""
    payloads = [payload_of(w) + TAIL for w in wires]

    def work() -> int:
        for payload in payloads:
            zlib.decompressobj(-WBITS).decompress(payload)
        return len(payloads)

    return ns_per_item(work, budget)


def measure_inflate_stream(row: Row, strategy: Strategy, passes: int) -> float:
    """A client of a per-conn strategy: one persistent decompressor fed the whole
    stream; ns per frame of the row."""
    packer = new_packer(strategy)
    stream = [
        (kind, payload_of(deflate_message(packer, f.encode())) + TAIL) for kind, f in row.sequence
    ]
    spent = 0
    count = 0
    clock = time.perf_counter_ns
    for _ in range(passes):
        inflater = zlib.decompressobj(-strategy.wbits)
        for index, (kind, payload) in enumerate(stream):
            t0 = clock()
            inflater.decompress(payload)
            t1 = clock()
            if row.is_timed(index, kind):
                spent += t1 - t0
                count += 1
    return spent / count


def measure_json(frames: Sequence[str], budget: float) -> float:
    def work() -> int:
        for frame in frames:
            json.loads(frame)
        return len(frames)

    return ns_per_item(work, budget)


class LoopbackPair:
    """A connected TCP pair on 127.0.0.1: a non-blocking, TCP_NODELAY sender
    (as Trio sets up its sockets) and a receiver drained between batches."""

    def __init__(self) -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            self.sender = socket.create_connection(listener.getsockname())
            self.receiver, _ = listener.accept()
        self.sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sender.setblocking(False)
        self.receiver.setblocking(False)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self.receiver.recv(1 << 20):
                pass

    def close(self) -> None:
        self.sender.close()
        self.receiver.close()


def measure_write(pair: LoopbackPair, wires: Sequence[bytes], budget: float) -> float:
    """ns per ``os.write`` of one frame; batches of ~32 KiB, the receiver drained
    (untimed) between batches so the socket never fills."""
    fd = pair.sender.fileno()
    per_batch = max(1, (32 * 1024) // max(1, int(statistics.mean(len(w) for w in wires))))
    batch = [wires[i % len(wires)] for i in range(per_batch)]
    spent = 0
    writes = 0
    clock = time.perf_counter_ns
    deadline = clock() + int(budget * 1e9)
    while clock() < deadline:
        pair.drain()
        t0 = clock()
        for data in batch:
            os.write(fd, data)
        spent += clock() - t0
        writes += len(batch)
    pair.drain()
    return spent / writes


def _traced_kib(make: Callable[[], Any], use: Callable[[Any], object], count: int = 50) -> float:
    """KiB zlib allocates per object (``tracemalloc`` sees zlib's allocations:
    CPython routes them through PyMem_RawMalloc)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    objects = [make() for _ in range(count)]
    for obj in objects:
        use(obj)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del objects
    return grown / count / 1024


def context_memory() -> dict[str, float]:
    """What one compression context costs, as the server or a client holds it."""
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -WBITS)
    data = packer.compress(os.urandom(50_000)) + packer.flush(zlib.Z_SYNC_FLUSH)

    def fill(p: Any) -> object:
        return p.compress(b"x" * 70_000) + p.flush(zlib.Z_SYNC_FLUSH)

    out = {
        f"compressor_{s.name}_kib": _traced_kib(partial(new_packer, s), fill)
        for s in STRATEGIES
        if s.kind == "per-conn"
    }
    # a client's decompressor: per message for shared, for the connection's life for per-conn
    out["decompressor_kib"] = _traced_kib(
        lambda: zlib.decompressobj(-WBITS), lambda d: d.decompress(data)
    )
    return out


# ---------------------------------------------------------------------------
# Correctness with real client libraries


def wsproto_client(server_no_context_takeover: bool) -> WSConnection:
    """A wsproto client that negotiated permessage-deflate with a wsproto server."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(
        client.send(Request(host="x", target="/api/v1/events", extensions=[PerMessageDeflate()]))
    )
    request = next(server.events())
    assert isinstance(request, Request)
    accept = AcceptConnection(
        extensions=[PerMessageDeflate(server_no_context_takeover=server_no_context_takeover)]
    )
    client.receive_data(server.send(accept))
    assert isinstance(next(client.events()), AcceptConnection)
    return client


def wsproto_decode(client: WSConnection, wire: bytes) -> str:
    client.receive_data(wire)
    parts = []
    for event in client.events():
        if not isinstance(event, TextMessage):
            raise AssertionError(f"wsproto: {event!r}")
        parts.append(event.data)
    return "".join(parts)


def websockets_decode(decoder: WsDeflate, wire: bytes) -> str:
    reader = StreamReader()
    reader.feed_data(wire)
    parser = WsFrame.parse(reader.read_exact, mask=False, max_size=1 << 20, extensions=[decoder])
    try:
        next(parser)
    except StopIteration as done:
        frame: WsFrame = done.value
        return bytes(frame.data).decode()
    raise AssertionError("websockets: incomplete frame")


def verify(sessions: Sequence[Session]) -> dict[str, Any]:
    """Every frame of every session, through wsproto's and websockets' decoders
    negotiated as each strategy needs, must give back the payload byte for byte."""
    checked = {s.name: 0 for s in STRATEGIES}

    def check(ok: bool, strategy: Strategy) -> None:
        if not ok:
            raise AssertionError(f"{strategy.name}: a frame did not round-trip")
        checked[strategy.name] += 1

    for strategy in STRATEGIES:
        for session in sessions:
            frames = [f for _, f in session.frames]
            if strategy.kind == "none":
                client = wsproto_client(False)  # RSV1 unset: taken as it is
                for frame in frames:
                    check(wsproto_decode(client, wire_none(frame)) == frame, strategy)
            elif strategy.kind == "shared":
                # The same bytes go to every recipient, whatever it received before:
                # decode them in session order and backwards, with both libraries.
                encode = shared_encoder(strategy)
                wires = [encode(f) for f in frames]
                for order in (range(len(frames)), range(len(frames) - 1, -1, -1)):
                    client = wsproto_client(True)
                    decoder = WsDeflate(True, False, WBITS, WBITS)
                    for i in order:
                        check(wsproto_decode(client, wires[i]) == frames[i], strategy)
                        check(websockets_decode(decoder, wires[i]) == frames[i], strategy)
            else:
                # One recipient's stream, in order, persistent contexts on both ends.
                packer = new_packer(strategy)
                client = wsproto_client(False)
                decoder = WsDeflate(False, False, strategy.wbits, WBITS)
                for frame in frames:
                    wire = deflate_message(packer, frame.encode())
                    check(wsproto_decode(client, wire) == frame, strategy)
                    check(websockets_decode(decoder, wire) == frame, strategy)
    return {"round_trips_ok": checked, "libraries": ["wsproto", "websockets"]}


# ---------------------------------------------------------------------------
# Client frames: the size limit and inflation


def masked_deflate_frame(data: bytes, wire_limit: int | None = None) -> tuple[bytes, int]:
    """A masked, compressed client text frame of ``data`` (a fresh context)."""
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -WBITS)
    body = (packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH))[:-4]
    if wire_limit is not None and len(body) > wire_limit:
        raise ValueError("does not fit")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(body))
    length = len(body)
    if length < 126:
        header = bytes((0xC1, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0xC1, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0xC1, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + mask + masked, len(body)


def wsproto_server(extensions: bool) -> WSConnection:
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    offer = [PerMessageDeflate()] if extensions else []
    server.receive_data(client.send(Request(host="x", target="/", extensions=offer)))
    assert isinstance(next(server.events()), Request)
    server.send(AcceptConnection(extensions=[PerMessageDeflate()] if extensions else []))
    return server


def feed(server: WSConnection, data: bytes) -> tuple[list[int], float]:
    """Feed bytes to a wsproto server; the sizes of the data events and the ms spent."""
    t0 = time.perf_counter_ns()
    server.receive_data(data)
    sizes = []
    for event in server.events():
        if isinstance(event, TextMessage):
            sizes.append(len(event.data))
    return sizes, (time.perf_counter_ns() - t0) / 1e6


def client_frames(max_client_frame: int) -> dict[str, Any]:
    """What permessage-deflate on client frames would do to ``max_client_frame``."""
    out: dict[str, Any] = {"max_client_frame": max_client_frame, "receive_size": RECEIVE_SIZE}
    # Today: no extension negotiated, so wsproto answers an RSV1 frame with a
    # CloseConnection event (1002) and our transport ends the stream.
    frame, _ = masked_deflate_frame(b"{}")
    server = wsproto_server(False)
    server.receive_data(frame)
    today = [repr(event) for event in server.events()]
    out["today_rsv1_frame"] = today
    # (a) The largest run of spaces whose compressed frame fits max_client_frame.
    size = max_client_frame * 1100
    while True:
        try:
            frame, body = masked_deflate_frame(b" " * size, max_client_frame - 14)
            break
        except ValueError:
            size = int(size * 0.99)
    server = wsproto_server(True)
    sizes, ms = feed(server, frame)
    out["small_bomb"] = {
        "wire_bytes": len(frame),
        "compressed_payload_bytes": body,
        "inflated_bytes_in_first_event": sizes[0] if sizes else 0,
        "events": len(sizes),
        "wsproto_ms": ms,
    }
    # (b) One read of RECEIVE_SIZE bytes of a bigger bomb frame.
    frame, body = masked_deflate_frame(b" " * (RECEIVE_SIZE * 1100))
    server = wsproto_server(True)
    sizes, ms = feed(server, frame[:RECEIVE_SIZE])
    out["one_read"] = {
        "bytes_read": RECEIVE_SIZE,
        "frame_payload_bytes": body,
        "inflated_bytes_in_first_event": sizes[0] if sizes else 0,
        "wsproto_ms": ms,
    }
    # (c) websockets bounds inflation itself: decompress(max_length=max_size).
    decoder = WsDeflate(False, False, WBITS, WBITS)
    small, _ = masked_deflate_frame(b" " * (max_client_frame * 1000))
    reader = StreamReader()
    reader.feed_data(small)
    parser = WsFrame.parse(
        reader.read_exact, mask=True, max_size=max_client_frame, extensions=[decoder]
    )
    try:
        next(parser)
        out["websockets_max_size"] = "accepted"
    except PayloadTooBig as exc:
        out["websockets_max_size"] = f"PayloadTooBig: {exc}"
    except StopIteration:
        out["websockets_max_size"] = "accepted"
    return out


# ---------------------------------------------------------------------------
# ---------------------------------------------------------------------------
# Main


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("wsproto", "websockets", "trio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "packages": versions,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def fmt(value: float, digits: int = 2) -> str:
    if value == 0:
        return "0"
    if value < 0.01:
        return f"{value:.4f}"
    if value < 0.1:
        return f"{value:.3f}"
    return f"{value:,.{digits}f}"


def print_table(results: dict[str, Any]) -> None:
    n1, n2 = (str(n) for n in RECIPIENTS)
    head = (
        f"{'frame':<32} {'strategy':<13} {'wire B':>7} {'left':>5} "
        f"{'enc µs/dlv N=' + n1:>16} {'N=' + n2:>8} {'write µs':>9} "
        f"{'client µs':>9} {'json µs':>8}"
    )
    print(head)
    print("-" * len(head))
    for row in results["rows"]:
        for i, strategy in enumerate(STRATEGIES):
            s = row["strategies"][strategy.name]
            dlv = s["server_us_per_delivery"]
            print(
                f"{row['label'] if i == 0 else '':<32} {strategy.name:<13} "
                f"{s['wire_bytes']:>7,.0f} {s['share_left']:>5.0%} {fmt(dlv[n1]):>16} "
                f"{fmt(dlv[n2]):>8} {fmt(s['write_us']):>9} {fmt(s['client_inflate_us']):>9} "
                f"{fmt(row['client_json_parse_us']) if i == 0 else '':>8}"
            )


def per_post(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What one post costs each subscriber on the wire: its TextMessagesCreated
    frame plus a RoomUpdated frame (the RoomUpdated row's mean), and how many
    such posts a 1 Gbit/s link carries per second (frame bytes only, no TCP/IP
    headers)."""
    room = next(r for r in rows if r["name"] == "room")
    out: dict[str, Any] = {}
    for row in rows:
        if row is room:
            continue
        entry = {}
        for strategy in STRATEGIES:
            name = strategy.name
            size = row["strategies"][name]["wire_bytes"] + room["strategies"][name]["wire_bytes"]
            entry[name] = {"bytes": size, "posts_per_s_at_1_gbit": 125e6 / size}
        out[row["name"]] = entry
    return out


Key = tuple[str, str, str]


def plan_for(
    rows: Sequence[Row],
    wires: dict[tuple[str, str], list[bytes]],
    pair: LoopbackPair,
    budget: float,
    passes: int,
) -> list[tuple[Key, Callable[[], float]]]:
    """Every measurement, as a key and a callable returning ns per item."""
    plan: list[tuple[Key, Callable[[], float]]] = []
    for row in rows:
        plan.append(((row.name, "", "json"), partial(measure_json, row.timed, budget)))
        for s in STRATEGIES:
            w = wires[row.name, s.name]
            plan.append(((row.name, s.name, "write"), partial(measure_write, pair, w, budget)))
            if s.kind == "none":
                encode = partial(measure_encode, row.timed, wire_none, budget)
                plan.append(((row.name, s.name, "encode"), encode))
            elif s.kind == "shared":
                encode = partial(measure_encode, row.timed, shared_encoder(s), budget)
                plan.append(((row.name, s.name, "encode"), encode))
                inflate = partial(measure_inflate_each, w, budget)
                plan.append(((row.name, s.name, "inflate"), inflate))
            else:
                for n in RECIPIENTS:
                    key = (row.name, s.name, f"encode{n}")
                    plan.append((key, partial(measure_per_conn, row, s, n)))
                inflate = partial(measure_inflate_stream, row, s, passes)
                plan.append(((row.name, s.name, "inflate"), inflate))
    return plan


def run(args: argparse.Namespace) -> dict[str, Any]:
    reps = 1 if args.quick else REPS
    budget = 0.03 if args.quick else 0.2
    passes = 2 if args.quick else 10
    load_before = os.getloadavg()
    print(f"load average {load_before[0]:.2f}; capturing frames from an in-process server ...")
    sessions = trio.run(capture_sessions, SIZES, POSTS)
    tune_gc()  # as the server does once it listens
    rows = rows_from(sessions)
    print("verifying round trips with wsproto and websockets ...")
    verification = verify(sessions)
    pair = LoopbackPair()
    wires = {(row.name, s.name): row_wires(row, s) for row in rows for s in STRATEGIES}
    plan = plan_for(rows, wires, pair, budget, passes)
    # Repetition r of every measurement, then r + 1: a burst of other load on
    # the machine spoils one repetition of many figures, which the median drops,
    # rather than every repetition of one figure.
    samples: dict[Key, list[Sample]] = {key: [] for key, _ in plan}
    for rep in range(reps):
        started = time.monotonic()
        for key, measure in plan:
            samples[key].append(timed(measure))
        print(f"repetition {rep + 1}/{reps}: {time.monotonic() - started:.0f} s")
    pair.close()

    def us(key: Key) -> float:
        return statistics.median(s.ns for s in samples[key]) / 1000

    def raw(key: Key) -> dict[str, list[float]]:
        return {
            "ns": [s.ns for s in samples[key]],
            "cpu_share": [round(s.cpu_share, 3) for s in samples[key]],
        }

    results: dict[str, Any] = {"strategies": {s.name: s.about for s in STRATEGIES}, "rows": []}
    for row in rows:
        raw_bytes = statistics.mean(len(w) for w in wires[row.name, "none"])
        strategies: dict[str, Any] = {}
        for s in STRATEGIES:
            size = statistics.mean(len(w) for w in wires[row.name, s.name])
            write = us((row.name, s.name, "write"))
            entry: dict[str, Any] = {
                "wire_bytes": size,
                "share_left": size / raw_bytes,
                "write_us": write,
                "client_inflate_us": 0.0,
                "raw": {"write": raw((row.name, s.name, "write"))},
            }
            if s.kind == "per-conn":
                per_delivery = {str(n): us((row.name, s.name, f"encode{n}")) for n in RECIPIENTS}
                entry["server_us_per_delivery"] = per_delivery
                entry["server_ms_per_event"] = {
                    str(n): per_delivery[str(n)] * n / 1000 for n in RECIPIENTS
                }
                for n in RECIPIENTS:
                    entry["raw"][f"encode{n}"] = raw((row.name, s.name, f"encode{n}"))
            else:
                per_event = us((row.name, s.name, "encode"))
                entry["server_us_per_event"] = per_event
                entry["server_us_per_delivery"] = {str(n): per_event / n for n in RECIPIENTS}
                entry["raw"]["encode"] = raw((row.name, s.name, "encode"))
            if s.kind != "none":
                entry["client_inflate_us"] = us((row.name, s.name, "inflate"))
                entry["raw"]["inflate"] = raw((row.name, s.name, "inflate"))
            entry["server_total_us_per_delivery"] = {
                n: v + write for n, v in entry["server_us_per_delivery"].items()
            }
            strategies[s.name] = entry
        results["rows"].append(
            {
                "name": row.name,
                "label": row.label,
                "frames": len(row.timed),
                "payload_chars_mean": statistics.mean(len(f) for f in row.timed),
                "client_json_parse_us": us((row.name, "", "json")),
                "raw_json": raw((row.name, "", "json")),
                "strategies": strategies,
                "sample_frame": row.timed[0],
            }
        )
    shares = [s.cpu_share for runs in samples.values() for s in runs]
    results["contention"] = {
        "cpu_share_median": statistics.median(shares),
        "cpu_share_min": min(shares),
        "note": "thread CPU time / wall time of each measurement; well below 1 means "
        "other processes took the CPU during it",
    }
    results["per_post"] = per_post(results["rows"])
    print("client frames and memory ...")
    results["memory_kib"] = context_memory()
    results["client_frames"] = client_frames(4096)
    results["calibration"] = calibration()
    results["verification"] = verification
    results["parameters"] = {
        "sizes_chars": list(SIZES),
        "posts_per_session": POSTS,
        "warmup_posts": WARMUP,
        "recipients": list(RECIPIENTS),
        "repetitions": reps,
        "budget_s_per_measurement": budget,
        "inflate_stream_passes": passes,
        "zlib_level": "Z_DEFAULT_COMPRESSION (6)",
        "seed": SEED,
        "quick": bool(args.quick),
    }
    results["machine"] = machine()
    results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition, short budgets")
    parser.add_argument("--out", default=str(OUT), help=f"where to write (default {OUT.name})")
    args = parser.parse_args()
    results = run(args)
    Path(args.out).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print()
    print_table(results)
    print()
    bomb = results["client_frames"]
    print(
        f"client frames: a {bomb['small_bomb']['wire_bytes']:,}-byte compressed frame "
        f"inflates to {bomb['small_bomb']['inflated_bytes_in_first_event']:,} bytes inside "
        f"wsproto before our transport counts it; one {RECEIVE_SIZE:,}-byte read of a larger "
        f"one to {bomb['one_read']['inflated_bytes_in_first_event']:,} bytes "
        f"({bomb['one_read']['wsproto_ms']:.0f} ms)"
    )
    print(
        "memory: "
        + ", ".join(
            f"{k.removesuffix('_kib')} {v:.0f} KiB" for k, v in results["memory_kib"].items()
        )
    )
    contention = results["contention"]
    if contention["cpu_share_median"] < 0.9:
        print(
            f"WARNING: the machine was busy (median CPU share {contention['cpu_share_median']:.2f}"
            "); run again on an idle machine"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
