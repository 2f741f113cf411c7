"""Envoy's tag extraction: a stat name becomes a tag-extracted name plus ``(tag, value)`` pairs.

This mirrors Envoy 1.40's ``TagProducerImpl`` (source/common/stats/tag_producer_impl.cc) and the
default extractors of ``TagNameValues`` (source/common/config/well_known_names.cc):

* Every extractor looks at the *original* name; the characters each one removes are unioned and
  taken out at the end (``removeCharacters`` with an IntervalSet), so the order of extractors only
  decides the order of the tags and which one wins when two share a tag name.
* Order: Envoy's defaults (the RE2 ones, then the tokenized ones) when ``use_all_default_tags``,
  then the bootstrap's ``stats_tags`` in order. Extractors whose regex starts with ``^word\\.``
  (a "prefix token") only run for stats whose first token is that word, and they run after every
  extractor without a prefix. That is why ``cluster.foo.upstream_rq_200`` gives
  ``envoy_response_code`` before ``envoy_cluster_name`` in Envoy's Prometheus output.
* Regex extractors: the first capture group is removed from the name, the second (or the first
  if there is only one) is the value. Default extractors are RE2 (a match needs a non-empty first
  group; an empty second group falls back to the first); ``stats_tags`` regexes are std::regex
  (ECMAScript: lookahead and ``[[:digit:]]`` allowed). Both use ``regex_search`` semantics.
* Tokenized extractors (``cluster.$.**``) match dot-separated tokens: ``*`` one token, ``**``
  any number, ``$`` the value; the value token and one adjacent dot are removed.
* When two extractors share a tag name, only the first one that matches contributes.
* ``fixed_value`` tags are added to every stat.

Extraction runs once per stat name (cached): rendering happens on scrape, not per request.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pilotfish.model.bootstrap import StatsConfig
from pilotfish.regex import Regex, RegexError, compile_regex

__all__ = [
    "DEFAULT_TAG_NAMES",
    "Tag",
    "TagExtractor",
    "compile_std_regex",
]

Tag = tuple[str, str]
# (value, start, end): the tag value and the half-open span of the name to remove.
_Hit = tuple[str, int, int]

# Segments Envoy substitutes into its default regexes (expandRegex). Where RE2 accepts a range
# Python rejects (``[\w-\./]``), the dash is escaped: the meaning is the same.
_EXPANSIONS = {
    "<ADDRESS>": r"(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)",
    "<CIPHER>": r"[\w-]+",
    "<TLS_VERSION>": r"TLSv\d\.\d",
    "<TAG_VALUE>": r"[^\.]+",
    "<ROUTE_CONFIG_NAME>": r"[\w\-\./]+",
    "<SCOPED_ROUTE_CONFIG_NAME>": r"[\w\-\.]+",
    "<LISTENER_OR_CLUSTER_WITH_NAME>": r"(?:listener|cluster)\..*?",
    "<PROXY_PROTOCOL_VERSION>": r"\d",
}


@dataclass(frozen=True, slots=True)
class _Re2Default:
    name: str
    regex: str
    negative_match: str = ""


@dataclass(frozen=True, slots=True)
class _TokenDefault:
    name: str
    pattern: str


# Envoy 1.40's TagNameValues, in declaration order (the RE2 descriptors, then the tokenized
# ones: Envoy keeps them in two vectors and adds all of the first before the second).
_RE2_DEFAULTS: tuple[_Re2Default, ...] = (
    _Re2Default("envoy.response_code", r"_rq(_(\d{3}))$"),
    _Re2Default("envoy.response_code_class", r"_rq_((\d))xx$"),
    _Re2Default(
        "envoy.dynamo_partition_id",
        r"^http\.<TAG_VALUE>\.dynamodb\.table\.<TAG_VALUE>\.capacity\.<TAG_VALUE>"
        r"(\.__partition_id=(\w{7}))$",
    ),
    _Re2Default(
        "envoy.dynamo_operation",
        r"^http\.<TAG_VALUE>\.dynamodb.(?:operation|table\.<TAG_VALUE>\.capacity)"
        r"(\.(<TAG_VALUE>))(?:\.|$)",
    ),
    _Re2Default(
        "envoy.dynamo_table", r"^http\.<TAG_VALUE>\.dynamodb.(?:table|error)\.((<TAG_VALUE>)\.)"
    ),
    _Re2Default("envoy.ssl_cipher", r"^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$"),
    _Re2Default("envoy.ssl_curve", r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.curves(\.(<CIPHER>))$"),
    _Re2Default(
        "envoy.ssl_sigalg", r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.sigalgs(\.(<CIPHER>))$"
    ),
    _Re2Default(
        "envoy.ssl_version", r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.versions(\.(<TLS_VERSION>))$"
    ),
    _Re2Default("cipher_suite", r"^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.(<CIPHER>))$"),
    _Re2Default(
        "envoy.health_check_name",
        r"^cluster\.<TAG_VALUE>\.health_check(\.name\.(<TAG_VALUE>))\..+",
    ),
    _Re2Default("envoy.http_conn_manager_prefix", r"^listener\..*?\.http\.((<TAG_VALUE>)\.)"),
    _Re2Default(
        "envoy.worker_id",
        r"^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)|server|listener_manager"
        r"|thread_local_cluster_manager)\.worker_((\d+)\.)",
    ),
    _Re2Default(
        "envoy.listener_address", r"^listener\.((<ADDRESS>|<TAG_VALUE>)\.)", negative_match="admin"
    ),
    _Re2Default(
        "envoy.rds_route_config", r"^http\.<TAG_VALUE>\.rds\.((<ROUTE_CONFIG_NAME>)\.)\w+?$"
    ),
    _Re2Default(
        "envoy.scoped_rds_config",
        r"^http\.<TAG_VALUE>\.scoped_rds\.((<SCOPED_ROUTE_CONFIG_NAME>)\.)\w+?$",
    ),
    _Re2Default(
        "envoy.rbac_policy_name",
        r"^http\.<TAG_VALUE>\.rbac\.(?:<TAG_VALUE>\.)?policy\.((<TAG_VALUE>)\.)"
        r"(allowed|shadow_allowed|denied|shadow_denied)$",
    ),
    _Re2Default(
        "envoy.rbac_http_prefix",
        r"^http\.<TAG_VALUE>\.rbac\.((<TAG_VALUE>)\.).*?",
        negative_match="policy",
    ),
    _Re2Default(
        "envoy.proxy_protocol_prefix",
        r"^proxy_proto\.((<TAG_VALUE>)\.).+$",
        negative_match="versions",
    ),
    _Re2Default(
        "envoy.proxy_protocol_version",
        r"^proxy_proto\.((?:<TAG_VALUE>\.)?versions\.v(<PROXY_PROTOCOL_VERSION>)\.)\w+$",
    ),
    _Re2Default(
        "envoy.tls_certificate",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.certificate\.((<TAG_VALUE>)\.).*$",
    ),
    _Re2Default("envoy.xds_resource_name", r"^sds\.((<TAG_VALUE>)\.).+"),
)

_TOKEN_DEFAULTS: tuple[_TokenDefault, ...] = (
    _TokenDefault("envoy.mongo_callsite", "mongo.*.collection.*.callsite.$.query.**"),
    _TokenDefault("envoy.mongo_collection", "mongo.*.collection.$.**.query.*"),
    _TokenDefault("envoy.mongo_cmd", "mongo.*.cmd.$.**"),
    _TokenDefault("envoy.grpc_bridge_method", "cluster.*.grpc.*.$.**"),
    _TokenDefault("envoy.http_user_agent", "http.*.user_agent.$.**"),
    _TokenDefault("envoy.virtual_cluster", "vhost.*.vcluster.$.**"),
    _TokenDefault("envoy.fault_downstream_cluster", "http.*.fault.$.**"),
    _TokenDefault("envoy.grpc_bridge_service", "cluster.*.grpc.$.**"),
    _TokenDefault("envoy.tcp_prefix", "tcp.$.**"),
    _TokenDefault("envoy.udp_prefix", "udp.$.**"),
    _TokenDefault("envoy.clientssl_prefix", "auth.clientssl.$.**"),
    _TokenDefault("envoy.ratelimit_prefix", "ratelimit.$.**"),
    _TokenDefault("envoy.cluster_name", "cluster.$.**"),
    _TokenDefault("envoy.ext_authz_prefix", "cluster.*.ext_authz.$.**"),
    _TokenDefault("envoy.ext_authz_prefix", "http.*.ext_authz.$.**"),
    _TokenDefault("envoy.http_conn_manager_prefix", "http.$.**"),
    _TokenDefault("envoy.virtual_host", "vhost.$.**"),
    _TokenDefault("envoy.mongo_prefix", "mongo.$.**"),
    _TokenDefault("envoy.route", "vhost.*.route.$.**"),
    _TokenDefault("envoy.thrift_prefix", "thrift.$.**"),
    _TokenDefault("envoy.redis_prefix", "redis.$.**"),
    _TokenDefault("envoy.local_http_ratelimit_prefix", "$.http_local_rate_limit.**"),
    _TokenDefault("envoy.local_network_ratelimit_prefix", "local_rate_limit.$.**"),
    _TokenDefault("envoy.local_listener_ratelimit_prefix", "listener_local_ratelimit.$.**"),
    _TokenDefault("envoy.dns_filter_prefix", "dns_filter.$.**"),
    _TokenDefault("envoy.connection_limit_prefix", "connection_limit.$.**"),
    _TokenDefault("envoy.rbac_prefix", "$.rbac.**"),
    _TokenDefault("envoy.google_grpc_client_prefix", "grpc.$.**"),
)

DEFAULT_TAG_NAMES: frozenset[str] = frozenset(
    [d.name for d in _RE2_DEFAULTS] + [d.name for d in _TOKEN_DEFAULTS]
)

_CACHE_LIMIT = 200_000  # names; a guard against unbounded churn, far above any real stat count


# std::regex (ECMAScript) accepts POSIX classes inside brackets; Python's re does not.
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_POSIX_RE = re.compile(r"\[:(\^?)([a-z]+):\]")


def compile_std_regex(pattern: str) -> re.Pattern[str]:
    """A std::regex (ECMAScript) pattern, as Envoy 1.40 compiles ``stats_tags`` regexes (its
    defaults are RE2, see ``_compile_default``): lookahead is allowed, POSIX bracket classes
    (``[[:digit:]]``) are translated, ``\\d``/``\\w`` stay ASCII-only. Python's ``re``
    backtracks like std::regex does; these patterns come from the bootstrap and only see stat
    names, never request data. Raises ``RegexError`` (a ValueError) for an invalid pattern."""

    def posix(m: re.Match[str]) -> str:
        cls = _POSIX_CLASSES.get(m.group(2))
        if cls is None:
            raise RegexError(f"invalid regex '{pattern}': unknown class [:{m.group(2)}:]")
        if m.group(1):
            raise RegexError(f"invalid regex '{pattern}': negated POSIX class unsupported")
        return cls

    with warnings.catch_warnings():
        # "Possible nested set" FutureWarnings: today's meaning ('[' literal) is Envoy's.
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return re.compile(_POSIX_RE.sub(posix, pattern), re.ASCII)
        except re.error as e:
            raise RegexError(f"invalid regex '{pattern}': {e}") from None


def _compile_default(pattern: str) -> Regex:
    """One of Envoy's built-in tag regexes (RE2, as Envoy compiles them, without the engine's
    program size limit), its ``<NAME>`` segments expanded."""
    for key, value in _EXPANSIONS.items():
        pattern = pattern.replace(key, value)
    return compile_regex(pattern, size_check=False)


def _regex_prefix(regex: str) -> str:
    """Envoy's extractRegexPrefix: ``^word\\.`` or ``^word(?=\\.)`` or ``^word$`` -> ``word``.
    Extractors with a prefix only run on stats whose first token is that prefix."""
    if not regex.startswith("^"):
        return ""
    for i in range(1, len(regex)):
        ch = regex[i]
        if ch.isascii() and (ch.isalnum() or ch == "_"):
            continue
        if i == 1:
            return ""
        rest = regex[i:]
        last_char = i == len(regex) - 1
        if (not last_char and rest.startswith(("\\.", "(?=\\."))) or (last_char and ch == "$"):
            return regex[1:i]
        return ""
    return ""


class _Extractor:
    __slots__ = ("name", "prefix")

    def __init__(self, name: str, prefix: str) -> None:
        self.name = name
        self.prefix = prefix

    def extract(self, name: str, tokens: Sequence[str]) -> _Hit | None:
        raise NotImplementedError


class _StdRegexExtractor(_Extractor):
    """TagExtractorStdRegexImpl: a ``stats_tags`` regex (std::regex, searched)."""

    __slots__ = ("_has_value_group", "_regex")

    def __init__(self, name: str, regex: re.Pattern[str]) -> None:
        super().__init__(name, _regex_prefix(regex.pattern))
        self._regex = regex
        self._has_value_group = regex.groups >= 2

    def extract(self, name: str, tokens: Sequence[str]) -> _Hit | None:
        if not self._regex.groups:
            return None
        m = self._regex.search(name)
        if m is None:
            return None
        remove = m.group(1)
        value = m.group(2) if self._has_value_group else remove
        start, end = m.span(1) if remove is not None else (0, 0)
        return value or "", start, end


class _Re2Extractor(_Extractor):
    """TagExtractorRe2Impl: a default tag regex, searched with RE2 in the name's bytes. A match
    needs a non-empty first group; an empty second group falls back to the first."""

    __slots__ = ("_negative_match", "_regex")

    def __init__(self, name: str, source: str, regex: Regex, negative_match: str = "") -> None:
        super().__init__(name, _regex_prefix(source))
        self._regex = regex
        self._negative_match = negative_match

    def extract(self, name: str, tokens: Sequence[str]) -> _Hit | None:
        data = name.encode()
        spans = self._regex.spans(data)
        if spans is None or len(spans) < 2:
            return None
        start, end = spans[1]
        if start < 0 or start == end:
            return None
        vstart, vend = spans[2] if len(spans) > 2 else spans[1]
        value = (data[vstart:vend] if vstart >= 0 else b"") or data[start:end]
        text = value.decode(errors="replace")
        if self._negative_match and text == self._negative_match:
            return None
        if not name.isascii():  # byte offsets -> character offsets
            end = len(data[:end].decode(errors="replace"))
            start = len(data[:start].decode(errors="replace"))
        return text, start, end


class _TokenExtractor(_Extractor):
    """TagExtractorTokensImpl: ``a.*.b.$.**`` matched token by token."""

    __slots__ = ("_match_index", "_pattern")

    def __init__(self, name: str, pattern: str) -> None:
        self._pattern = pattern.split(".")
        first = self._pattern[0]
        super().__init__(name, "" if first in ("$", "*", "**") else first)
        self._match_index = self._pattern.index("$")

    def extract(self, name: str, tokens: Sequence[str]) -> _Hit | None:
        found = [0, 0]  # index of the value token, its character offset
        if not self._search(tokens, 0, 0, 0, found):
            return None
        index, start = found
        value = tokens[index]
        end = start + len(value)
        if index < len(tokens) - 1:
            end += 1  # remove the dot after the value: "ab." or "cd."
        elif start > 0:
            start -= 1  # the value is the last token: remove the dot before it, ".ef"
        return value, start, end

    def _search(
        self, tokens: Sequence[str], i: int, p: int, char_index: int, found: list[int]
    ) -> bool:
        """Whether tokens[i:] match pattern[p:]; sets ``found`` when passing the ``$``."""
        pattern = self._pattern
        while i < len(tokens) and p < len(pattern):
            if p == self._match_index:
                found[0], found[1] = i, char_index
            else:
                expected = pattern[p]
                if expected == "**":
                    if p == len(pattern) - 1:
                        return True  # a trailing ** swallows the rest (at least one token)
                    # ** in the middle: the rest of the pattern must match some suffix.
                    for j in range(i, len(tokens)):
                        if self._search(tokens, j, p + 1, char_index, found):
                            return True
                        char_index += len(tokens[j]) + 1
                    return False
                if expected not in ("*", tokens[i]):
                    return False
                char_index += len(tokens[i]) + 1
            i += 1
            p += 1
        return p == len(pattern) and i == len(tokens)


class _FixedExtractor(_Extractor):
    """TagExtractorFixedImpl: the same tag on every stat. Envoy derives a prefix token from the
    value as if it were a regex, so a value like ``^foo\\.x`` only tags ``foo.*`` stats (checked
    against Envoy 1.40)."""

    __slots__ = ("_value",)

    def __init__(self, name: str, value: str) -> None:
        super().__init__(name, _regex_prefix(value))
        self._value = value

    def extract(self, name: str, tokens: Sequence[str]) -> _Hit | None:
        return self._value, 0, 0


def _default_extractors(names: Iterable[str] | None = None) -> list[_Extractor]:
    """Envoy's default extractors (all, or those for the given tag names), RE2 ones first."""
    wanted = None if names is None else set(names)
    out: list[_Extractor] = [
        _Re2Extractor(d.name, d.regex, _compile_default(d.regex), d.negative_match)
        for d in _RE2_DEFAULTS
        if wanted is None or d.name in wanted
    ]
    out.extend(
        _TokenExtractor(d.name, d.pattern)
        for d in _TOKEN_DEFAULTS
        if wanted is None or d.name in wanted
    )
    return out


def _remove_spans(name: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return name
    out = []
    pos = 0
    for start, end in sorted(spans):
        if start > pos:
            out.append(name[pos:start])
        pos = max(pos, end)
    out.append(name[pos:])
    return "".join(out)


class TagExtractor:
    """Envoy's TagProducer for one bootstrap ``stats_config``.

    ``extract(name)`` returns ``(tag_extracted_name, ((tag_name, value), ...))``; results are
    cached per name. ``pin`` records the tags of a stat created with explicit tags (as Envoy's
    ``counterFromStatNameWithTags``), which bypasses the extractors.
    """

    def __init__(self, config: StatsConfig | None = None) -> None:
        config = config or StatsConfig()
        extractors = _default_extractors() if config.use_all_default_tags else []
        for tag in config.tags:
            extractors.extend(self._configured(tag.name, tag.regex, tag.fixed_value))
        self._unprefixed = [e for e in extractors if not e.prefix]
        self._by_prefix: dict[str, list[_Extractor]] = {}
        for e in extractors:
            if e.prefix:
                self._by_prefix.setdefault(e.prefix, []).append(e)
        counts: dict[str, int] = {}
        for e in extractors:
            counts[e.name] = counts.get(e.name, 0) + 1
        self._shared_names = frozenset(n for n, c in counts.items() if c > 1)
        self._cache: dict[str, tuple[str, tuple[Tag, ...]]] = {}
        self._pinned: dict[str, tuple[str, tuple[Tag, ...]]] = {}

    @staticmethod
    def _configured(name: str, regex: str, fixed_value: str) -> list[_Extractor]:
        if not name:
            raise ValueError("tag_name cannot be empty")
        if regex:
            return [_StdRegexExtractor(name, compile_std_regex(regex))]
        if not fixed_value and name in DEFAULT_TAG_NAMES:
            # A TagSpecifier with neither regex nor fixed_value names a default extractor.
            return _default_extractors([name])
        return [_FixedExtractor(name, fixed_value)]

    def extract(self, name: str) -> tuple[str, tuple[Tag, ...]]:
        pinned = self._pinned.get(name)
        if pinned is not None:
            return pinned
        hit = self._cache.get(name)
        if hit is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            hit = self._cache[name] = self._produce(name)
        return hit

    def pin(self, name: str, tag_extracted_name: str, tags: Sequence[Tag]) -> None:
        """Use these tags for ``name`` instead of extracting them (stats created with tags)."""
        self._pinned[name] = (tag_extracted_name, tuple(tags))

    def unpin(self, name: str) -> None:
        self._pinned.pop(name, None)

    def _candidates(self, name: str) -> list[_Extractor]:
        dot = name.find(".")
        if dot < 0:
            return self._unprefixed
        return self._unprefixed + self._by_prefix.get(name[:dot], [])

    def _produce(self, name: str) -> tuple[str, tuple[Tag, ...]]:
        tokens = name.split(".")
        tags: list[Tag] = []
        spans: list[tuple[int, int]] = []
        matched_shared: set[str] = set()
        for extractor in self._candidates(name):
            shared = extractor.name in self._shared_names
            if shared and extractor.name in matched_shared:
                continue  # another extractor with this tag name already matched
            hit = extractor.extract(name, tokens)
            if hit is None:
                continue
            value, start, end = hit
            tags.append((extractor.name, value))
            if start < end:
                spans.append((start, end))
            if shared:
                matched_shared.add(extractor.name)
        return _remove_spans(name, spans), tuple(tags)
