-- The plugin against an in-process fake canvas-ls (no model): exact, instant answers, so the drawing
-- and editing paths get checked precisely: a multi-line suggestion (inline text + virtual lines) and
-- its acceptance, the live canvas (an insertion, a replaced range, a stale version, done), the
-- selection ranges :CanvasFill sends (charwise, linewise, blockwise), a command whose answer is
-- RequestCancelled (which Neovim drops without calling the handler), and the highlight groups.
-- Run: CANVAS_TEST_CONFIG=cfg.json nvim --headless --clean -u fake_driver.lua
local cfg = vim.json.decode(table.concat(vim.fn.readfile(os.getenv('CANVAS_TEST_CONFIG')), '\n'))
vim.opt.rtp:prepend(cfg.plugin_dir)
vim.o.swapfile = false
vim.o.shadafile = 'NONE'
vim.g.python_recommended_style = 0

local result = { ok = false, requests = {} }
local function finish(err)
  if err then
    result.error = tostring(err)
  end
  vim.fn.writefile({ vim.json.encode(result) }, cfg.out)
  vim.cmd('qall!')
end
vim.defer_fn(function()
  finish('driver timeout')
end, 60000)

local SUGGESTION = 'if x:\n        return 1\n    return 2'

-- ---- the fake server --------------------------------------------------------------------------
local server = {}
local function fake(dispatchers)
  server.dispatchers = dispatchers
  local next_id, closing = 0, false
  local rpc = {}
  function rpc.request(method, params, callback, notify_reply_callback)
    next_id = next_id + 1
    local id = next_id
    result.requests[#result.requests + 1] = { method = method, params = params }
    local function reply(err, res)
      vim.schedule(function()
        if notify_reply_callback then
          notify_reply_callback(id)
        end
        if err and err.code == -32800 then
          return -- as Neovim's rpc does for RequestCancelled: the handler is never called
        end
        callback(err, res)
      end)
    end
    if method == 'initialize' then
      reply(nil, {
        capabilities = {
          textDocumentSync = 1,
          inlineCompletionProvider = { workDoneProgress = true },
          executeCommandProvider = { commands = { 'canvas.fillSelection', 'canvas.fillBody', 'canvas.repairSelection', 'canvas.status' } },
        },
      })
    elseif method == 'textDocument/inlineCompletion' then
      local p = params.position
      reply(nil, { items = { { insertText = SUGGESTION, range = { start = p, ['end'] = p } } } })
    elseif method == 'workspace/executeCommand' then
      if params.command == 'canvas.fillBody' then
        reply({ code = -32800, message = 'fill cancelled' }, nil)
      elseif params.command == 'canvas.repairSelection' then
        reply(nil, { applied = false, reason = 'nothing to repair' })
      else
        reply(nil, { applied = false, reason = 'fake server' })
      end
    elseif method == 'shutdown' then
      reply(nil, vim.NIL)
    else
      reply(nil, vim.NIL)
    end
    return true, id
  end
  function rpc.notify(method)
    if method == 'exit' then
      closing = true
    end
    return true
  end
  function rpc.is_closing()
    return closing
  end
  function rpc.terminate()
    closing = true
  end
  return rpc
end

local canvas = require('canvas')
canvas.setup({ cmd = fake, inline = { mode = 'plugin', debounce_ms = 20 }, notify = false })

-- ---- helpers ------------------------------------------------------------------------------------
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
local function wait_until(what, cond)
  for _ = 1, 200 do
    local v = cond()
    if v then
      return v
    end
    sleep(25)
  end
  error('timed out waiting for ' .. what)
end
local function feed(keys, remap)
  vim.api.nvim_feedkeys(vim.keycode(keys), remap and 'm' or 'n', false)
  sleep(30)
end
local function marks(bufnr, ns)
  local out = {}
  for _, m in ipairs(vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })) do
    local d = m[4]
    local vt = {}
    for _, c in ipairs(d.virt_text or {}) do
      vt[#vt + 1] = c[1]
    end
    local vl = {}
    for _, line in ipairs(d.virt_lines or {}) do
      local parts = {}
      for _, c in ipairs(line) do
        parts[#parts + 1] = c[1]
      end
      vl[#vl + 1] = table.concat(parts)
    end
    out[#out + 1] = { row = m[2], col = m[3], text = table.concat(vt), virt_lines = vl, hl_group = d.hl_group, end_row = d.end_row, end_col = d.end_col, pos = d.virt_text_pos }
  end
  return out
end

local HL_GROUPS = { 'CanvasGhost', 'CanvasLive', 'CanvasLiveInfo', 'CanvasLiveReplaced', 'ComplHint' }
local function highlights()
  local out = {}
  for _, name in ipairs(HL_GROUPS) do
    local hl = vim.api.nvim_get_hl(0, { name = name, link = false })
    out[name] = { fg = hl.fg, ctermfg = hl.ctermfg, italic = hl.italic or false, cterm_italic = (hl.cterm or {}).italic or false }
  end
  return out
end

local function scenario(bufnr, client)
  local uri = vim.uri_from_bufnr(bufnr)
  -- 1. multi-line suggestion in an empty line of a function body
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  result.before = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
  feed('A')
  wait_until('a suggestion', function()
    return canvas.suggestion(bufnr)
  end)
  result.ghost = marks(bufnr, require('canvas.inline').ns)
  feed('<Tab>', true)
  wait_until('the accepted text', function()
    return #vim.api.nvim_buf_get_lines(bufnr, 0, -1, false) > #result.before
  end)
  result.after_accept = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
  result.cursor_after_accept = vim.api.nvim_win_get_cursor(0)
  feed('<Esc>')

  -- 2. live canvas: an insertion (two lines) and a replaced range, then a stale version, then done
  local version = vim.lsp.util.buf_versions[bufnr]
  local notify = server.dispatchers.notification
  notify('canvas/step', {
    uri = uri, version = version, step = 2, maxSteps = 8, done = false,
    spans = {
      { range = { start = { line = 0, character = 9 }, ['end'] = { line = 0, character = 9 } }, text = ' #·a\n# b·' },
      { range = { start = { line = 1, character = 4 }, ['end'] = { line = 1, character = 9 } }, text = 'wh·le' },
    },
  })
  sleep(50)
  result.live = marks(bufnr, canvas.live_ns)
  notify('canvas/step', { uri = uri, version = version - 1, step = 3, maxSteps = 8, done = false, spans = {
    { range = { start = { line = 0, character = 0 }, ['end'] = { line = 0, character = 0 } }, text = 'stale' } } })
  sleep(50)
  result.live_stale = marks(bufnr, canvas.live_ns)
  notify('canvas/step', { uri = uri, version = version, step = 3, maxSteps = 8, done = false, spans = {
    { range = { start = { line = 0, character = 0 }, ['end'] = { line = 0, character = 0 } }, text = 'x' } } })
  notify('canvas/step', { uri = uri, version = version, done = true })
  sleep(50)
  result.live_done = marks(bufnr, canvas.live_ns)

  -- 3. selection ranges
  local enc = client.offset_encoding
  result.ranges_v = canvas.selection_ranges(bufnr, 'v', { 1, 5 }, { 1, 7 }, enc)
  result.ranges_V = canvas.selection_ranges(bufnr, 'V', { 2, 1 }, { 3, 1 }, enc)
  result.ranges_V_last = canvas.selection_ranges(bufnr, "V", { 6, 3 }, { 6, 1 }, enc)
  result.ranges_block = canvas.selection_ranges(bufnr, '\22', { 2, 5 }, { 3, 6 }, enc)
  -- :CanvasFill from a linewise visual selection of lines 2-3
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  local done = {}
  vim.api.nvim_create_autocmd('User', { pattern = 'CanvasFillDone', once = true, callback = function(a) done.fill = a.data end })
  feed('Vj')
  feed(':CanvasFill<CR>')
  wait_until('the fill answer', function()
    return done.fill
  end)
  result.fill_done = done.fill

  -- :CanvasRepair from a charwise visual selection ("f(x)" of line 1): [uri, range], one range; its
  -- messages (notify on for it) are recorded
  local notes, plain_notify = {}, vim.notify
  vim.notify = function(msg)
    notes[#notes + 1] = msg
  end
  canvas.config.notify = true
  local cursor = vim.api.nvim_win_get_cursor(0)
  vim.api.nvim_win_set_cursor(0, { 1, 4 })
  vim.api.nvim_create_autocmd('User', { pattern = 'CanvasFillDone', once = true, callback = function(a) done.repair = a.data end })
  feed('v3l')
  feed(':CanvasRepair<CR>')
  wait_until('the repair answer', function()
    return done.repair
  end)
  result.repair_done = done.repair
  canvas.config.notify = false
  vim.notify = plain_notify
  result.repair_messages = notes
  vim.api.nvim_win_set_cursor(0, cursor)

  -- 4. a command answered with RequestCancelled still ends (CanvasFillDone with an error)
  vim.api.nvim_create_autocmd('User', { pattern = 'CanvasFillDone', once = true, callback = function(a) done.body = a.data end })
  vim.cmd('CanvasFillBody')
  wait_until('the cancelled body fill to end', function()
    return done.body
  end)
  result.body_done = done.body

  -- 5. highlight groups (with cterm colours, for terminals without 'termguicolors'), also as set
  -- again after a colorscheme change
  result.hl = highlights()
  vim.cmd.colorscheme('default')
  result.hl_after_colorscheme = highlights()
  result.ok = true
end

vim.api.nvim_create_autocmd('LspAttach', {
  once = true,
  callback = function(args)
    local client = vim.lsp.get_client_by_id(args.data.client_id)
    result.client = client.name
    co = coroutine.create(function()
      scenario(args.buf, client)
      finish()
    end)
    vim.schedule(resume)
  end,
})
vim.api.nvim_create_autocmd('VimEnter', {
  nested = true,
  once = true,
  callback = function()
    vim.cmd.edit(vim.fn.fnameescape(cfg.file))
  end,
})
