-- Drives the canvas plugin in a headless Neovim: `nvim --headless --clean -u driver.lua`, with
-- CANVAS_TEST_CONFIG naming a JSON file: {plugin_dir, cmd, settings, file, mode, scenario, out, ...}.
-- Writes what it saw to cfg.out as JSON and quits. Every step runs from the main loop (timers), so
-- typed keys (nvim_feedkeys) go through the real insert mode, mappings and autocommands.
local cfg = vim.json.decode(table.concat(vim.fn.readfile(os.getenv('CANVAS_TEST_CONFIG')), '\n'))
vim.opt.rtp:prepend(cfg.plugin_dir)
vim.o.swapfile = false
vim.o.shadafile = 'NONE'
vim.g.python_recommended_style = 0 -- keep <Tab> a real tab (the python ftplugin would expand it)
if os.getenv('CANVAS_TEST_DEBUG') then
  vim.lsp.log.set_level('debug')
end

local result = { events = {}, ok = false }
local function log(msg)
  result.events[#result.events + 1] = string.format('%.2f %s', vim.uv.hrtime() / 1e9, msg)
end

local function finish(err)
  if err then
    result.error = tostring(err)
  end
  vim.fn.writefile({ vim.json.encode(result) }, cfg.out)
  vim.cmd('qall!')
end

-- Hard deadline: never hang the test.
vim.defer_fn(function()
  finish('driver timeout after ' .. cfg.timeout_s .. ' s')
end, cfg.timeout_s * 1000)

local canvas = require('canvas')
canvas.setup({
  cmd = cfg.cmd,
  settings = cfg.settings,
  inline = { mode = cfg.mode, auto_trigger = cfg.auto_trigger ~= false, debounce_ms = 50 },
  notify = false,
})

-- ---- coroutine helpers ---------------------------------------------------------------------------
local co
local function resume(...)
  local ok, err = coroutine.resume(co, ...)
  if not ok then
    finish(debug.traceback(co, err))
  end
end
local function sleep(ms)
  vim.defer_fn(resume, ms)
  coroutine.yield()
end
local function wait_until(what, cond, timeout_ms)
  local t0 = vim.uv.now()
  while true do
    local ok, v = pcall(cond)
    if ok and v then
      return v
    end
    if vim.uv.now() - t0 > (timeout_ms or 60000) then
      error('timed out waiting for ' .. what)
    end
    sleep(50)
  end
end
local function feed(keys, remap)
  vim.api.nvim_feedkeys(vim.keycode(keys), remap and 'm' or 'n', false)
  sleep(30)
end
local function buffer_text(bufnr)
  return table.concat(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false), '\n')
end
local function ghost_marks(bufnr)
  local marks = {}
  for name, ns in pairs(vim.api.nvim_get_namespaces()) do
    if name == 'canvas.ghost' or name == 'nvim.lsp.inline_completion' then
      for _, m in ipairs(vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })) do
        local d = m[4]
        local vt = {}
        for _, chunk in ipairs(d.virt_text or {}) do
          vt[#vt + 1] = chunk[1]
        end
        marks[#marks + 1] = { ns = name, row = m[2], col = m[3], text = table.concat(vt), virt_lines = d.virt_lines and #d.virt_lines or 0, hl = d.virt_text and d.virt_text[1] and d.virt_text[1][2] }
      end
    end
  end
  return marks
end
local function fill_done()
  local state = {}
  vim.api.nvim_create_autocmd('User', {
    pattern = 'CanvasFillDone',
    once = true,
    callback = function(args)
      state.data = args.data
    end,
  })
  return state
end

-- A suggestion at the cursor. The tiny random-weight model's fills are noise, and a fill that does not
-- survive the server's syntax checks gives no suggestion; so when a fill ends (its canvas/step "done")
-- without one, change the seed (workspace/didChangeConfiguration) and ask again with the trigger key.
local function get_suggestion(bufnr, trigger_first)
  local seed = cfg.settings.seed or 0
  for attempt = 1, 8 do
    if trigger_first or attempt > 1 then
      feed('<M-\\>', true)
    end
    local cleared = canvas.stats.live_cleared
    local s = wait_until('a suggestion or the end of a fill', function()
      return canvas.suggestion(bufnr) or (canvas.stats.live_cleared > cleared and 'ended')
    end, cfg.wait_ms)
    if s == 'ended' then
      sleep(400) -- the answer follows the last canvas/step
      s = canvas.suggestion(bufnr)
    end
    if s then
      result.suggestion_attempts = attempt
      return s
    end
    seed = seed + 1
    log('no suggestion; seed ' .. seed)
    canvas.update_settings({ seed = seed })
    sleep(100)
  end
  error('no suggestion after 8 seeds')
end

-- Run a fill command until its fill is applied (other seeds when one does not survive the syntax
-- checks). run() issues the command; returns the CanvasFillDone data and the most live-canvas marks seen.
local function command_applied(bufnr, what, run)
  local seed = canvas.config.settings.seed or 0
  local max_live = 0
  for attempt = 1, 8 do
    local done = fill_done()
    run()
    wait_until(what, function()
      max_live = math.max(max_live, #vim.api.nvim_buf_get_extmarks(bufnr, canvas.live_ns, 0, -1, {}))
      return done.data
    end, cfg.wait_ms)
    local data = done.data
    result[what .. '_attempts'] = attempt
    if data.error or (data.result and data.result.applied) then
      return data, max_live
    end
    seed = seed + 1
    log(what .. ' not applied (' .. tostring(data.result and data.result.reason) .. '); seed ' .. seed)
    canvas.update_settings({ seed = seed })
    sleep(100)
  end
  error(what .. ': nothing applied after 8 seeds')
end

-- ---- scenarios ----------------------------------------------------------------------------------
local scenarios = {}

-- Auto trigger on InsertEnter, ghost text, accept with <Tab>; then :CanvasFillBody; then :checkhealth.
function scenarios.main(bufnr)
  result.inline_mode = canvas.inline_mode()
  result.nvim_version = tostring(vim.version())
  -- 1. inline completion at the end of the hole line
  vim.api.nvim_win_set_cursor(0, { cfg.hole_line, 0 })
  result.before = buffer_text(bufnr)
  feed('A')
  wait_until('insert mode', function()
    return vim.api.nvim_get_mode().mode == 'i'
  end, 5000)
  result.cursor = vim.api.nvim_win_get_cursor(0)
  log('insert mode at ' .. vim.inspect(result.cursor))
  local s = get_suggestion(bufnr, false)
  result.suggestion = s
  result.ghost = ghost_marks(bufnr)
  log('suggestion ' .. vim.inspect(s.text))
  result.tick_before_accept = vim.api.nvim_buf_get_changedtick(bufnr)
  feed('<Tab>', true) -- remap: the buffer-local mapping decides
  wait_until('the accepted text', function()
    return vim.api.nvim_buf_get_changedtick(bufnr) ~= result.tick_before_accept
  end, 10000)
  sleep(100)
  result.after_accept = buffer_text(bufnr)
  result.cursor_after_accept = vim.api.nvim_win_get_cursor(0)
  feed('<Esc>')
  wait_until('normal mode', function()
    return vim.api.nvim_get_mode().mode == 'n'
  end, 5000)

  -- 2. :CanvasFillBody inside the second function (with the live canvas on)
  vim.api.nvim_win_set_cursor(0, { cfg.body_line, 4 })
  result.before_body = buffer_text(bufnr)
  local steps_before = canvas.stats.steps_drawn
  canvas.stats.live_marks_max = 0
  local data, max_live = command_applied(bufnr, 'body', function()
    vim.cmd('CanvasFillBody')
  end)
  sleep(200) -- workspace/applyEdit arrives before the command's answer; give it a moment anyway
  result.body_result = data.result
  result.body_error = data.error
  result.after_body = buffer_text(bufnr)
  result.steps_drawn = canvas.stats.steps_drawn - steps_before
  -- polled while the fill ran, or counted by the plugin as each step was drawn (a fast fill can draw
  -- and clear every step between two polls)
  result.live_marks_seen = math.max(max_live, canvas.stats.live_marks_max)
  result.live_marks_after = #vim.api.nvim_buf_get_extmarks(bufnr, canvas.live_ns, 0, -1, {})

  -- 3. :CanvasFill on a charwise visual selection: the "0" of "    total = 0" (line 3)
  result.before_selection = buffer_text(bufnr)
  local sel = command_applied(bufnr, 'selection', function()
    vim.api.nvim_win_set_cursor(0, { 3, 12 })
    feed('v')
    feed(':CanvasFill<CR>')
  end)
  sleep(200)
  result.selection_result = sel.result
  result.selection_error = sel.error
  result.after_selection = buffer_text(bufnr)
  result.mode_after_selection = vim.api.nvim_get_mode().mode

  -- 4. :CanvasRepair on a linewise visual selection of lines 3-5 (with a threshold that re-noises some
  -- of the random model's tokens)
  canvas.update_settings({ repairThreshold = 0.3 })
  sleep(100)
  result.before_repair = buffer_text(bufnr)
  local repaired = fill_done()
  vim.api.nvim_win_set_cursor(0, { 3, 0 })
  feed('Vjj')
  feed(':CanvasRepair<CR>')
  wait_until('the repair', function()
    return repaired.data
  end, cfg.wait_ms)
  sleep(200)
  result.repair_result = repaired.data.result
  result.repair_error = repaired.data.error
  result.after_repair = buffer_text(bufnr)

  -- 5. :checkhealth canvas
  vim.cmd('checkhealth canvas')
  result.health = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  result.ok = true
end

-- Manual trigger key, dismiss key, and <Tab> falling back to a real tab when nothing is shown.
function scenarios.keys(bufnr)
  result.inline_mode = canvas.inline_mode()
  vim.api.nvim_win_set_cursor(0, { cfg.hole_line, 0 })
  result.before = buffer_text(bufnr)
  feed('A')
  wait_until('insert mode', function()
    return vim.api.nvim_get_mode().mode == 'i'
  end, 5000)
  result.visible_before_trigger = canvas.suggestion(bufnr) ~= nil
  feed('<Tab>', true) -- nothing shown: a plain tab is inserted
  sleep(100)
  result.after_tab = buffer_text(bufnr)
  feed('<BS>')
  sleep(100)
  result.after_bs = buffer_text(bufnr)
  local s = get_suggestion(bufnr, true) -- the trigger key
  result.suggestion = s
  result.ghost = ghost_marks(bufnr)
  feed('<C-]>', true) -- dismiss key
  sleep(100)
  result.visible_after_dismiss = canvas.suggestion(bufnr) ~= nil
  result.ghost_after_dismiss = ghost_marks(bufnr)
  result.after_dismiss = buffer_text(bufnr)
  -- typing cancels: trigger, type at once, and the stale answer must not be shown. Fills of ~1.3 s
  -- (400 steps of the tiny model) keep the request surely in flight when the typed key arrives: at
  -- 8 steps (~40 ms) Neovim sometimes took the answer in between (CI once saw no cancel).
  canvas.update_settings({ maxSteps = 400, singleLineSteps = 400 })
  sleep(100)
  feed('<M-\\>', true)
  feed('x')
  sleep(3000)
  local cur = canvas.suggestion(bufnr)
  result.after_typing = buffer_text(bufnr)
  result.stale_suggestion = cur and cur.row ~= nil and (cur.col ~= vim.api.nvim_win_get_cursor(0)[2]) or false
  result.inline_stats = require('canvas.inline').stats
  feed('<Esc>')
  result.ok = true
end

local started = false
vim.api.nvim_create_autocmd('LspAttach', {
  callback = function(args)
    local client = vim.lsp.get_client_by_id(args.data.client_id)
    if started or not client or client.name ~= 'canvas_ls' then
      return
    end
    started = true
    log('attached ' .. client.name .. ' encoding ' .. tostring(client.offset_encoding))
    result.offset_encoding = client.offset_encoding
    co = coroutine.create(function()
      -- wait for the server's warm-up (model load) so timeouts measure fills, not start-up
      local status
      local t0 = vim.uv.now()
      while not status or status.model == nil or status.model == vim.NIL do
        client:request('workspace/executeCommand', { command = 'canvas.status', arguments = {} }, function(err, r)
          status = (not err) and r or { model = nil }
          resume()
        end, args.buf)
        coroutine.yield()
        if status.model == nil or status.model == vim.NIL then
          if vim.uv.now() - t0 > cfg.wait_ms then
            error('the server never loaded its model: ' .. vim.inspect(status))
          end
          sleep(200)
        end
      end
      result.status = status
      scenarios[cfg.scenario](args.buf)
      finish()
    end)
    vim.schedule(resume)
  end,
})

vim.api.nvim_create_autocmd('VimEnter', {
  nested = true, -- or FileType / LspAttach never fire for the file
  once = true,
  callback = function()
    vim.cmd.edit(vim.fn.fnameescape(cfg.file))
  end,
})
