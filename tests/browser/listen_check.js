// Drives the listening report in headless Chromium (Debian's `chromium`, no browser download) and prints one
// JSON object with what it saw. Usage: node listen_check.js <index.html> <screenshot.png> <chromium> [verdicts.csv]
"use strict";
const fs = require("fs");
const { chromium } = require("playwright-core");

(async () => {
  const [html, shot, exe, csvOut] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: exe, headless: true,
    args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--disable-gpu"],
  });
  const out = { errors: [], external: [] };
  try {
    const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1500, height: 900 } });
    await context.route("**/*", (route) => {  // no network: only the report's own files may load
      const url = route.request().url();
      if (url.startsWith("file:") || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
      out.external.push(url);
      return route.abort();
    });
    const page = await context.newPage();
    page.on("console", (m) => { if (m.type() === "error") out.errors.push(m.text()); });
    page.on("pageerror", (e) => out.errors.push(String(e)));
    page.on("requestfailed", (r) => out.errors.push("failed: " + r.url()));
    await page.goto("file://" + html);
    await page.waitForSelector("#rows tr");
    out.title = await page.title();
    out.rows = await page.locator("#rows tr").count();
    const col = (i) => page.$$eval("#rows tr", (trs, i) => trs.map((tr) => tr.children[i].textContent), i);
    // a row's play button creates its player, which plays: its currentTime advances
    out.audio = await page.evaluate(async () => {
      if (document.querySelector("#rows audio")) return { error: "a player existed before anything was played" };
      document.querySelector("#rows button.play").click();
      const a = document.querySelector("#rows audio");
      if (!a) return { error: "no player was created" };
      await new Promise((r) => { a.addEventListener("playing", r, { once: true }); setTimeout(r, 5000); });
      const t0 = a.currentTime;
      await new Promise((r) => setTimeout(r, 1500));
      return { t0, t1: a.currentTime, paused: a.paused, error: a.error && a.error.code, src: a.currentSrc };
    });
    out.images = await page.evaluate(() => [document.getElementById("hist"), document.querySelector("#rows img")]
      .map((im) => im.complete && im.naturalWidth));
    // sorting changes the order
    out.sortedBy = await page.$eval("th.sorted-asc, th.sorted-desc", (th) => th.dataset.key + " " + th.className);
    out.scoreAsc = (await col(2)).map(Number);
    out.rowsAsc = await col(0);
    await page.click('th[data-key="score"]');
    out.scoreDesc = (await col(2)).map(Number);
    await page.click('th[data-key="song_rank"]');
    out.songRank = (await col(5)).map(Number);
    await page.click('th[data-key="score"]');
    // keyboard verdicts update the CSV export
    out.csv0 = await page.$eval("#csv", (t) => t.value);
    await page.click("#rows tr:nth-child(1) td:nth-child(1)");
    const first = await page.$$eval("#rows tr:nth-child(1) td", (td) => [td[0].textContent, td[1].textContent]);
    await page.keyboard.press("d");
    out.csv1 = await page.$eval("#csv", (t) => t.value);
    await page.keyboard.press("j");
    const second = await page.$$eval("#rows tr:nth-child(2) td", (td) => [td[0].textContent, td[1].textContent]);
    await page.keyboard.press("Shift+K");
    out.csv2 = await page.$eval("#csv", (t) => t.value);
    out.marked = [first, second];
    out.verdictCell = await page.$eval("#rows tr:nth-child(1) td:nth-child(8)", (td) => td.textContent);
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
    out.download = fs.readFileSync(await dl.path(), "utf8");
    out.downloadName = dl.suggestedFilename();
    if (csvOut) fs.writeFileSync(csvOut, out.download);
    // filtering
    await page.fill("#filter", first[0]);
    out.filtered = await col(0);
    await page.fill("#filter", "");
    await page.screenshot({ path: shot });
  } catch (e) {
    out.exception = String(e && e.stack || e);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
})();
