-- Inline completion (ghost text) for canvas-ls.
--
-- Two paths:
--   * "builtin" (Neovim 0.12+, which has vim.lsp.inline_completion): the built-in feature is enabled for
--     the buffers canvas-ls attaches to; this module only adds the accept / dismiss / trigger keys.
--   * "plugin" (Neovim 0.11): this module requests textDocument/inlineCompletion itself (debounced on
--     InsertEnter / TextChangedI, and on the trigger key), draws the suggestion with extmarks (inline
--     virt_text for the first line, virt_lines for the rest), accepts and dismisses it, and cancels the
--     in-flight request whenever the text or the cursor moves on.
local util = require('canvas.util')

local api = vim.api
local M = {}

local METHOD = 'textDocument/inlineCompletion'
local TRIGGER_INVOKED, TRIGGER_AUTOMATIC = 1, 2
local REQUEST_CANCELLED, CONTENT_MODIFIED = -32800, -32801

M.ns = api.nvim_create_namespace('canvas.ghost')

---@type table<integer, table> per-buffer state of the plugin path
local state = {}

--- Statistics, for tests and :checkhealth.
M.stats = { requests = 0, cancelled = 0, shown = 0, accepted = 0 }

--- Which path is used: "builtin" or "plugin". `want` is the user's choice: "auto", "builtin" or "plugin".
function M.resolve_mode(want)
  local has_builtin = vim.lsp.inline_completion ~= nil and type(vim.lsp.inline_completion.enable) == 'function'
  if want == 'plugin' then
    return 'plugin'
  elseif want == 'builtin' then
    return has_builtin and 'builtin' or 'plugin'
  end
  return has_builtin and 'builtin' or 'plugin'
end

local function config()
  return require('canvas').config
end

function M.mode()
  return M.resolve_mode(config().inline.mode)
end

local function client_for(bufnr)
  local clients = vim.lsp.get_clients({ bufnr = bufnr, name = require('canvas').client_name })
  return clients[1]
end

local function buf_state(bufnr)
  local st = state[bufnr]
  if not st then
    st = {}
    state[bufnr] = st
  end
  return st
end

local function in_insert()
  local m = api.nvim_get_mode().mode
  return m:sub(1, 1) == 'i'
end

local function window_of(bufnr)
  if api.nvim_win_get_buf(0) == bufnr then
    return api.nvim_get_current_win()
  end
  local win = vim.fn.bufwinid(bufnr)
  return win ~= -1 and win or nil
end

-- ---------------------------------------------------------------------------------------------------
-- Plugin path (Neovim 0.11)
-- ---------------------------------------------------------------------------------------------------

local function stop_timer(st)
  if st.timer then
    local timer = st.timer
    st.timer = nil
    if not timer:is_closing() then
      timer:stop()
      timer:close()
    end
  end
end

--- Cancel the in-flight request of a buffer, if any.
function M.cancel(bufnr)
  local st = state[bufnr]
  if not st then
    return
  end
  stop_timer(st)
  local req = st.request
  st.request = nil
  if req then
    local client = vim.lsp.get_client_by_id(req.client_id)
    if client then
      pcall(function()
        client:cancel_request(req.id)
      end)
    end
    M.stats.cancelled = M.stats.cancelled + 1
  end
end

--- Remove the ghost text (the suggestion is forgotten).
function M.clear(bufnr)
  local st = state[bufnr]
  if st then
    st.item = nil
  end
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

local function draw(bufnr, item)
  api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  local lines = vim.split(item.display, '\n', { plain = true })
  local hl = 'CanvasGhost'
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[i], hl } }
  end
  local opts = {
    virt_text = { { lines[1], hl } },
    virt_text_pos = 'inline',
    hl_mode = 'combine',
    priority = 200,
  }
  if #virt_lines > 0 then
    opts.virt_lines = virt_lines
  end
  item.extmark = api.nvim_buf_set_extmark(bufnr, M.ns, item.row, item.col, opts)
end

--- Show an LSP inline completion item as ghost text at the cursor.
local function show(bufnr, client, lsp_item, cursor)
  local text = util.insert_text(lsp_item)
  local row, col = cursor[1] - 1, cursor[2]
  local srow, scol, erow, ecol = row, col, row, col
  if lsp_item.range then
    srow, scol = util.to_byte(bufnr, lsp_item.range.start, client.offset_encoding)
    erow, ecol = util.to_byte(bufnr, lsp_item.range['end'], client.offset_encoding)
  end
  -- The part of the item the user already typed (range start .. cursor) is not drawn again.
  local display = text
  if srow < row or (srow == row and scol < col) then
    local typed = util.text_between(bufnr, srow, scol, row, col)
    if text:sub(1, #typed) ~= typed then
      return false -- the item does not continue what is typed: nothing sensible to show
    end
    display = text:sub(#typed + 1)
  end
  if display == '' and (erow == row and ecol == col) then
    return false
  end
  local st = buf_state(bufnr)
  st.item = {
    client_id = client.id,
    text = text,
    display = display,
    srow = srow,
    scol = scol,
    erow = erow,
    ecol = ecol,
    row = row,
    col = col,
    tick = api.nvim_buf_get_changedtick(bufnr),
    command = lsp_item.command,
  }
  draw(bufnr, st.item)
  M.stats.shown = M.stats.shown + 1
  return true
end

--- Request an inline completion at the cursor (plugin path). kind: 1 invoked, 2 automatic.
function M.request(bufnr, kind)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local st = buf_state(bufnr)
  M.cancel(bufnr)
  local client = client_for(bufnr)
  local win = window_of(bufnr)
  if not client or not win then
    return false
  end
  if kind == TRIGGER_AUTOMATIC and not in_insert() then
    return false
  end
  local cursor = api.nvim_win_get_cursor(win)
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding)
  params.context = { triggerKind = kind }
  local id
  local ok, request_id = client:request(METHOD, params, function(err, result)
    if not st.request or st.request.id ~= id then
      return -- superseded or cancelled
    end
    st.request = nil
    if err then
      if err.code ~= REQUEST_CANCELLED and err.code ~= CONTENT_MODIFIED and kind == TRIGGER_INVOKED then
        vim.notify('canvas-ls: ' .. (err.message or vim.inspect(err)), vim.log.levels.WARN)
      end
      return
    end
    if not api.nvim_buf_is_valid(bufnr) or api.nvim_buf_get_changedtick(bufnr) ~= tick then
      return -- the text changed meanwhile
    end
    local w = window_of(bufnr)
    if not w or not in_insert() or not vim.deep_equal(api.nvim_win_get_cursor(w), cursor) then
      return -- the cursor moved on, or insert mode was left
    end
    local items = result and (result.items or result) or {}
    for _, lsp_item in ipairs(items) do
      if show(bufnr, client, lsp_item, cursor) then
        return
      end
    end
    if kind == TRIGGER_INVOKED then
      vim.notify('canvas-ls: no suggestion here', vim.log.levels.INFO)
    end
  end, bufnr)
  if ok and request_id then
    id = request_id
    st.request = { client_id = client.id, id = request_id }
    M.stats.requests = M.stats.requests + 1
  end
  return ok
end

--- Debounced automatic request (plugin path).
local function schedule(bufnr)
  local st = buf_state(bufnr)
  stop_timer(st)
  if not config().inline.auto_trigger then
    return
  end
  local timer = vim.uv.new_timer()
  st.timer = timer
  timer:start(
    config().inline.debounce_ms,
    0,
    vim.schedule_wrap(function()
      if st.timer ~= timer then
        return
      end
      stop_timer(st)
      if api.nvim_buf_is_valid(bufnr) and api.nvim_get_current_buf() == bufnr then
        M.request(bufnr, TRIGGER_AUTOMATIC)
      end
    end)
  )
end

--- Something changed (text or cursor): drop a suggestion that no longer fits, and ask again.
local function on_change(bufnr)
  local st = buf_state(bufnr)
  local item = st.item
  if item then
    local win = window_of(bufnr)
    local cursor = win and api.nvim_win_get_cursor(win)
    if cursor and cursor[1] - 1 == item.row and cursor[2] == item.col and api.nvim_buf_get_changedtick(bufnr) == item.tick then
      return -- still where it was shown (e.g. CursorMovedI right after our own redraw)
    end
  end
  M.cancel(bufnr)
  M.clear(bufnr)
  schedule(bufnr)
end

function M.visible(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if M.mode() == 'builtin' then
    return M.builtin_current(bufnr) ~= nil
  end
  local st = state[bufnr]
  return st ~= nil and st.item ~= nil
end

--- The suggestion shown in a buffer: {text, row, col} (0-based, the insertion point), or nil.
function M.current(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if M.mode() == 'builtin' then
    local cur = M.builtin_current(bufnr)
    if not cur then
      return nil
    end
    local text = type(cur.insert_text) == 'string' and cur.insert_text or (cur.insert_text and cur.insert_text.value) or ''
    local r = cur.range
    local row, col
    if r and r.start then
      row, col = r.start.row, r.start.col
    end
    return { text = text, row = row, col = col, builtin = true }
  end
  local st = state[bufnr]
  local item = st and st.item
  if not item then
    return nil
  end
  return { text = item.text, display = item.display, row = item.srow, col = item.scol, end_row = item.erow, end_col = item.ecol }
end

--- Accept the suggestion: its text replaces its range, the cursor goes to the end. True if accepted.
function M.accept(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if M.mode() == 'builtin' then
    local ok = vim.lsp.inline_completion.get({ bufnr = bufnr })
    if ok then
      M.stats.accepted = M.stats.accepted + 1
    end
    return ok
  end
  local st = state[bufnr]
  local item = st and st.item
  if not item then
    return false
  end
  M.cancel(bufnr)
  M.clear(bufnr)
  local lines = vim.split(item.text, '\n', { plain = true })
  local ok, err = pcall(api.nvim_buf_set_text, bufnr, item.srow, item.scol, item.erow, item.ecol, lines)
  if not ok then
    vim.notify('canvas-ls: could not insert the suggestion: ' .. tostring(err), vim.log.levels.WARN)
    return false
  end
  local win = window_of(bufnr)
  if win then
    local row = item.srow + #lines - 1
    local col = (#lines == 1 and item.scol or 0) + #lines[#lines]
    pcall(api.nvim_win_set_cursor, win, { row + 1, col })
  end
  if item.command then
    local client = vim.lsp.get_client_by_id(item.client_id)
    if client then
      client:exec_cmd(item.command, { bufnr = bufnr })
    end
  end
  M.stats.accepted = M.stats.accepted + 1
  return true
end

--- Dismiss the suggestion (and cancel the pending request). True if something was shown.
function M.dismiss(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if M.mode() == 'builtin' then
    local completor = M.builtin_completor(bufnr)
    local shown = completor ~= nil and completor.current ~= nil
    if completor and type(completor.abort) == 'function' then
      pcall(completor.abort, completor)
    elseif shown then -- fallback: switching off and on again clears the suggestion
      vim.lsp.inline_completion.enable(false, { bufnr = bufnr })
      vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    end
    return shown
  end
  local shown = M.visible(bufnr)
  M.cancel(bufnr)
  M.clear(bufnr)
  return shown
end

--- Ask for a suggestion now (the trigger key), on either path.
function M.trigger(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if M.mode() == 'builtin' then
    local completor = M.builtin_completor(bufnr)
    if completor and type(completor.request) == 'function' then
      return pcall(completor.request, completor, TRIGGER_INVOKED)
    end
    return false
  end
  return M.request(bufnr, TRIGGER_INVOKED)
end

-- ---------------------------------------------------------------------------------------------------
-- Built-in path (Neovim 0.12): the state lives in vim.lsp.inline_completion; read it carefully.
-- ---------------------------------------------------------------------------------------------------

--- The built-in completor object of a buffer (internal to Neovim; nil if its shape changed).
function M.builtin_completor(bufnr)
  local ok, cap = pcall(function()
    return vim.lsp._capability.all.inline_completion
  end)
  if not ok or type(cap) ~= 'table' or type(cap.active) ~= 'table' then
    return nil
  end
  return cap.active[bufnr]
end

function M.builtin_current(bufnr)
  local completor = M.builtin_completor(bufnr)
  if completor then
    return completor.current
  end
  -- Unknown internals: fall back to "is something drawn in the built-in namespace".
  local ns = api.get_namespaces()['nvim.lsp.inline_completion']
  if ns and #api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { limit = 1 }) > 0 then
    return { insert_text = '' }
  end
  return nil
end

-- ---------------------------------------------------------------------------------------------------
-- Keys and attaching
-- ---------------------------------------------------------------------------------------------------

-- Whatever the key did before we mapped it (a global mapping of another plugin, or the key itself).
local fallbacks = {}

local function fallback_keys(bufnr, lhs)
  local fb = fallbacks[bufnr] and fallbacks[bufnr][lhs]
  if not fb or vim.tbl_isempty(fb) then
    return lhs -- noremap: the key's own meaning (e.g. a real <Tab>)
  end
  if fb.callback then
    if fb.expr == 1 then
      return fb.callback()
    end
    M._pending_fallback = fb.callback
    return '<Cmd>lua require("canvas.inline")._run_fallback()<CR>'
  end
  if fb.expr == 1 then
    return api.nvim_eval(fb.rhs)
  end
  if fb.noremap == 1 then
    return fb.rhs
  end
  -- a remappable rhs: feed it with remapping on
  api.nvim_feedkeys(api.nvim_replace_termcodes(fb.rhs, true, true, true), 'm', false)
  return ''
end

function M._run_fallback()
  local fn = M._pending_fallback
  M._pending_fallback = nil
  if fn then
    fn()
  end
end

local function map(bufnr, lhs, desc, on_key)
  if not lhs or lhs == '' then
    return
  end
  fallbacks[bufnr] = fallbacks[bufnr] or {}
  if fallbacks[bufnr][lhs] == nil then
    local existing = vim.fn.maparg(lhs, 'i', false, true)
    -- Ignore our own mapping (setup() called twice) and buffer-local ones we are about to replace.
    if existing and existing.desc and existing.desc:match('^canvas%-ls') then
      existing = {}
    end
    fallbacks[bufnr][lhs] = existing or {}
  end
  vim.keymap.set('i', lhs, function()
    return on_key(bufnr, lhs)
  end, { buffer = bufnr, expr = true, silent = true, replace_keycodes = true, desc = 'canvas-ls: ' .. desc })
end

--- Set up a buffer that the canvas-ls client attached to.
function M.attach(bufnr)
  local cfg = config()
  local mode = M.mode()
  if not cfg.inline.enabled then
    return
  end
  if mode == 'builtin' then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    -- The built-in (0.12-dev) keeps its debounce timer running after InsertLeave, so a request goes
    -- out from normal mode ~200 ms later, and canvas-ls lets it supersede a :CanvasFillBody just
    -- started. Stop that timer when insert mode ends.
    api.nvim_create_autocmd('InsertLeave', {
      group = api.nvim_create_augroup('canvas.inline.' .. bufnr, { clear = true }),
      buffer = bufnr,
      callback = function()
        local completor = M.builtin_completor(bufnr)
        if completor and type(completor.reset_timer) == 'function' then
          pcall(completor.reset_timer, completor)
        end
      end,
    })
  else
    local group = api.nvim_create_augroup('canvas.inline.' .. bufnr, { clear = true })
    api.nvim_create_autocmd('InsertEnter', {
      group = group,
      buffer = bufnr,
      callback = function()
        schedule(bufnr)
      end,
    })
    api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, {
      group = group,
      buffer = bufnr,
      callback = function()
        on_change(bufnr)
      end,
    })
    api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
      group = group,
      buffer = bufnr,
      callback = function()
        M.cancel(bufnr)
        M.clear(bufnr)
      end,
    })
    api.nvim_create_autocmd('BufWipeout', {
      group = group,
      buffer = bufnr,
      callback = function()
        M.detach(bufnr)
      end,
    })
  end

  local keys = cfg.keymaps or {}
  map(bufnr, keys.accept, 'accept the suggestion', function(b, lhs)
    if M.visible(b) then
      return '<Cmd>lua require("canvas.inline").accept()<CR>'
    end
    return fallback_keys(b, lhs)
  end)
  map(bufnr, keys.dismiss, 'dismiss the suggestion', function(b, lhs)
    if M.visible(b) then
      return '<Cmd>lua require("canvas.inline").dismiss()<CR>'
    end
    return fallback_keys(b, lhs)
  end)
  map(bufnr, keys.trigger, 'suggest here', function()
    return '<Cmd>lua require("canvas.inline").trigger()<CR>'
  end)
end

function M.detach(bufnr)
  M.cancel(bufnr)
  M.clear(bufnr)
  state[bufnr] = nil
  fallbacks[bufnr] = nil
  pcall(api.nvim_del_augroup_by_name, 'canvas.inline.' .. bufnr)
end

return M
