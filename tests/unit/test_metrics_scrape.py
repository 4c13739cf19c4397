"""One GET of a /metrics page (adapters.metrics_scrape) against a real local HTTP server:
the text, or why not, and never an exception for a pod that does not answer."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from tritonfleet.adapters.metrics_scrape import MetricsScraper


async def serve_pages(release: asyncio.Event) -> tuple[web.AppRunner, str]:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text='nv_inference_count{model="m"} 3\n')

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=503, text="starting")

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/metrics")

    async def slow(_: web.Request) -> web.Response:
        await release.wait()  # answers only once the scraper has given up
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/broken", broken)
    app.router.add_get("/moved", moved)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_scrape_returns_the_text_or_says_why_not() -> None:
    async def main() -> None:
        release = asyncio.Event()
        runner, base = await serve_pages(release)
        scraper = MetricsScraper(timeout=0.2)
        try:
            ok = await scraper.scrape(f"{base}/metrics")
            assert ok.text is not None and 'model="m"' in ok.text and ok.error == ""
            assert (await scraper.scrape(f"{base}/broken")).error == "HTTP 503"
            assert (await scraper.scrape(f"{base}/moved")).error == "HTTP 302"  # not followed
            late = await scraper.scrape(f"{base}/slow")
            release.set()
            assert late.text is None and "Timeout" in late.error
            refused = await scraper.scrape(f"http://127.0.0.1:{closed_port()}/metrics")
            assert refused.text is None and "Connect" in refused.error
        finally:
            await scraper.close()
            await runner.cleanup()

    asyncio.run(main())
