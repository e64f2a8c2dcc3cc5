// Drives a listening report of thousands of rows in headless Chromium: how soon it answers a sort, and whether
// sort, filter, keyboard focus and verdicts work across pages. Prints one JSON object.
// Usage: node listen_scale.js <index.html> <chromium>
"use strict";
const { chromium } = require("playwright-core");

(async () => {
  const [html, exe] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: exe, headless: true, args: ["--no-sandbox", "--disable-gpu"] });
  const out = { errors: [], external: [] };
  try {
    const context = await browser.newContext({ viewport: { width: 1500, height: 900 } });
    await context.route("**/*", (route) => {  // no network: only the report's own files may load
      const url = route.request().url();
      if (url.startsWith("file:") || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
      out.external.push(url);
      return route.abort();
    });
    const page = await context.newPage();
    page.on("console", (m) => { if (m.type() === "error") out.errors.push(m.text()); });
    page.on("pageerror", (e) => out.errors.push(String(e)));
    const col = (i) => page.$$eval("#rows tr", (trs, i) => trs.map((tr) => tr.children[i].textContent), i);
    const info = () => page.$eval("#pageinfo", (e) => e.textContent);
    const csv = () => page.$eval("#csv", (t) => t.value);

    // navigation -> the first sort has re-rendered the table (score, descending)
    const t0 = Date.now();
    await page.goto("file://" + html);
    await page.waitForSelector("#rows tr");
    out.firstRowsMs = Date.now() - t0;
    await page.click('th[data-key="score"]');
    out.topDesc = Number((await col(2))[0]);
    out.sortMs = Date.now() - t0;
    await page.fill("#filter", "train-0777");
    out.filterRows = await col(0);
    out.filterMs = Date.now() - t0;
    await page.fill("#filter", "");

    // what is in the DOM: one page of rows, no audio players, images loaded lazily
    out.domRows = await page.locator("#rows tr").count();
    out.players = await page.locator("#rows audio").count();
    out.images = await page.$$eval("#rows img", (ims) => [...new Set(ims.map((im) => im.loading))]);
    await page.waitForFunction(() => { const im = document.querySelector("#rows img"); return im.complete && im.naturalWidth > 0; });
    out.imagesLoaded = await page.$$eval("#rows img", (ims) => ims.filter((im) => im.complete && im.naturalWidth > 0).length);

    // sort ascending: the first row of page 1 and the last row of the last page are the extremes of every row
    await page.click('th[data-key="score"]');
    out.firstAsc = Number((await col(2))[0]);
    out.pageInfo1 = await info();
    let clicks = 0;
    while (!(await page.$eval("#next", (b) => b.disabled)) && clicks < 1000) { await page.click("#next"); clicks++; }
    out.pagesClicked = clicks;
    out.pageInfoLast = await info();
    const last = (await col(2)).map(Number);
    out.lastAsc = last[last.length - 1];

    // keyboard: `j` on the last row of page 1 moves the focus onto page 2
    while (!(await page.$eval("#prev", (b) => b.disabled))) await page.click("#prev");
    await page.click("#rows tr:last-child td:nth-child(1)");
    out.focusBefore = await page.$eval("#rows tr.focus", (tr) => Number(tr.dataset.i));
    await page.keyboard.press("j");
    out.focusAfter = await page.$eval("#rows tr.focus", (tr) => Number(tr.dataset.i));
    out.pageInfoAfterJ = await info();

    // verdicts on two pages, both in the CSV; the first is still shown after paging away and back
    const first = await page.$eval("#rows tr.focus", (tr) => [tr.children[0].textContent, tr.children[1].textContent]);
    await page.keyboard.press("d");
    for (let i = 0; i < 3; i++) await page.click("#next");
    await page.click("#rows tr:nth-child(1) td:nth-child(1)");
    const second = await page.$eval("#rows tr.focus", (tr) => [tr.children[0].textContent, tr.children[1].textContent]);
    await page.keyboard.press("Shift+K");
    out.marked = [first, second];
    out.csv = await csv();
    for (let i = 0; i < 3; i++) await page.click("#prev");
    out.verdictBack = await page.$eval('#rows tr[data-i="' + out.focusAfter + '"] td:nth-child(8)', (td) => td.textContent);
    // sorting by verdict reaches the marked rows wherever they were
    await page.click('th[data-key="verdict"]');
    await page.click('th[data-key="verdict"]');
    out.verdictSorted = (await col(7)).slice(0, 6);

    // filters narrow every page's rows, and a row's player is created when it is played
    await page.selectOption("#decision", "drop");
    out.dropInfo = await info();
    await page.selectOption("#decision", "");
    await page.click("#rows tr:nth-child(2) button.play");
    out.playersAfterPlay = await page.locator("#rows audio").count();
  } catch (e) {
    out.exception = String(e && e.stack || e);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
})();
