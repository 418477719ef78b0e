"""``camsdd crawl``: candidate records from one source into ``W/crawl/``."""

from __future__ import annotations

import argparse
import os
import sys

from crawlers import base, commons, flickr, http, lists, openverse
from pipeline.stages import crawl
from pipeline.store import workdir

SOURCES = ("flickr", "commons", "openverse", "urls", "folder")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crawl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Runs the per-class queries against one source and writes "
        "W/crawl/<name>/manifest-<run>-*.parquet (key, status, reason, url, page_url, source, "
        "source_id, query_class, query, license, license_url, author, title, width, "
        "height). Interrupt and rerun to resume: pages already fetched are not fetched "
        "again and no record is written twice.",
        epilog="secrets come from the environment only:\n"
        f"  {flickr.API_KEY_ENV}   required for --source flickr\n"
        f"  {openverse.TOKEN_ENV}  optional for --source openverse (higher limits)\n",
    )
    parser.add_argument("--work", required=True, help="work directory (local path or gs://…)")
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--urls", help="url-list file (.txt, .csv or .jsonl) for --source urls")
    parser.add_argument("--folder", help="image folder for --source folder")
    parser.add_argument(
        "--name",
        help="name of this crawl's manifest (default: the source name); use different "
        "names to keep several url lists or folders in one work directory",
    )
    parser.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="CLASS",
        help="only these classes (repeatable), e.g. --class 10_Waterfall; for url lists "
        "and folders: the class of rows that have no label",
    )
    parser.add_argument(
        "--queries",
        help="class,query CSV replacing the default per-class queries "
        "(crawlers/queries.csv; copy and edit it)",
    )
    parser.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="CLASS=TEXT",
        help="replace a class's queries for this run (repeatable); for Commons, "
        "'CLASS=Category:Waterfalls' lists a category",
    )
    parser.add_argument("--max-per-query", type=int, help="stop each query after this many records")
    parser.add_argument(
        "--licenses",
        help="comma-separated license filter. Flickr: license ids (default "
        f"{','.join(flickr.DEFAULT_LICENSES)}); Commons: families of "
        f"{','.join(commons.ALL_LICENSE_FAMILIES)} (default "
        f"{','.join(commons.DEFAULT_LICENSES)}); Openverse: license_type (default "
        f"{openverse.DEFAULT_LICENSE_TYPE})",
    )
    parser.add_argument("--min-date", help="Flickr: earliest upload date, YYYY-MM-DD")
    parser.add_argument("--max-date", help="Flickr: latest upload date, YYYY-MM-DD (default: now)")
    parser.add_argument(
        "--user-agent",
        default=http.DEFAULT_USER_AGENT,
        help="User-Agent for API requests; Wikimedia asks for a contact, e.g. "
        "'mybot/1.0 (me@example.org)'",
    )
    parser.add_argument(
        "--min-interval",
        type=float,
        help="seconds between requests to the API host (default: 1 for Flickr and "
        "Commons, 3 for anonymous Openverse, 0 for lists)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="read timeout, seconds")
    parser.add_argument("--retries", type=int, default=4, help="retries on 429/5xx/errors")
    parser.add_argument(
        "--endpoint",
        help="API base URL instead of the public one (a mirror, or a local test server)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _default_interval(source: str, has_token: bool) -> float:
    if source == "openverse" and not has_token:
        return openverse.ANONYMOUS_INTERVAL
    return 1.0 if source in ("flickr", "commons", "openverse") else 0.0


def make_source(args: argparse.Namespace) -> base.Source:
    """The configured source; raises ValueError (or MissingApiKeyError) on bad options."""
    if args.source in ("urls", "folder"):
        default_class = args.classes[0] if args.classes else None
        if args.classes and len(args.classes) > 1:
            raise ValueError(f"--source {args.source} takes one --class (the default label)")
        if args.source == "urls":
            if not args.urls:
                raise ValueError("--source urls needs --urls FILE")
            return lists.UrlListSource(args.urls, default_class=default_class)
        if not args.folder:
            raise ValueError("--source folder needs --folder DIR")
        return lists.FolderSource(args.folder, default_class=default_class)

    has_token = bool(os.environ.get(openverse.TOKEN_ENV))
    interval = args.min_interval
    if interval is None:
        interval = _default_interval(args.source, has_token)
    config = http.ClientConfig(
        user_agent=args.user_agent,
        read_timeout=args.timeout,
        retries=args.retries,
        min_interval=interval,
    )
    client = http.PoliteClient(config)
    endpoint = {"endpoint": args.endpoint} if args.endpoint else {}
    licenses = tuple(x.strip() for x in args.licenses.split(",")) if args.licenses else None
    if args.source == "flickr":
        return flickr.FlickrSource(
            client,
            min_date=args.min_date,
            max_date=args.max_date,
            **({"licenses": licenses} if licenses else {}),
            **endpoint,
        )
    if args.source == "commons":
        return commons.CommonsSource(
            client, **({"licenses": licenses} if licenses else {}), **endpoint
        )
    return openverse.OpenverseSource(
        client, **({"license_type": ",".join(licenses)} if licenses else {}), **endpoint
    )


def run(args: argparse.Namespace) -> int:
    try:
        source = make_source(args)
        if args.source in ("urls", "folder"):
            queries = source.queries({})
        else:
            per_class = base.select_queries(
                base.load_queries(args.queries), args.classes, args.query
            )
            queries = source.queries(per_class)
    except (ValueError, OSError, flickr.MissingApiKeyError) as error:
        print(f"error: {http.redact(str(error))}", file=sys.stderr)
        return 2
    work = workdir.absolute(args.work)
    try:
        name = crawl.check_name(args.name or source.name)
        with workdir.stage_lock(work, "crawl", name):
            summary = crawl.crawl(
                source,
                queries,
                work,
                name=name,
                max_per_query=args.max_per_query,
                progress=not args.no_progress,
            )
    except (ValueError, OSError, workdir.WorkDirError) as error:
        print(f"error: {http.redact(str(error))}", file=sys.stderr)
        return 2
    finally:
        source.close()
    print(summary.render_text())
    if summary.incomplete:
        print(
            f"error: {len(summary.incomplete)} queries stopped early (see above); "
            "rerun the same command to resume them",
            file=sys.stderr,
        )
        return 1
    return 0
