-- canvas-ls: commands and highlight groups. The server itself is configured by require("canvas").setup().
if vim.g.loaded_canvas_ls then
  return
end
vim.g.loaded_canvas_ls = true

-- The groups take their GUI colours from the colorscheme's group (as a link would) and carry cterm
-- colours too: without 'termguicolors' (a 256-colour terminal) only ctermfg/cterm are drawn, and a
-- link to a group that has none would show the ghost text like real text. A colorscheme's own cterm
-- colour wins; else a grey (xterm 256-colour palette).
local groups = {
  { 'CanvasGhost', 'Comment', 244, { italic = true } }, -- inline suggestion
  { 'CanvasLive', 'Comment', 244, { italic = true } }, -- live canvas text
  { 'CanvasLiveInfo', 'NonText', 242, {} }, -- "canvas 3/16"
  { 'CanvasLiveReplaced', 'DiagnosticUnnecessary', 242, {} }, -- text a fill is replacing
}

local function highlights()
  for _, g in ipairs(groups) do
    local name, from, ctermfg, attrs = g[1], g[2], g[3], g[4]
    local ok, src = pcall(vim.api.nvim_get_hl, 0, { name = from, link = false })
    src = ok and src or {}
    local spec = {
      fg = src.fg or 0x808080,
      bg = src.bg,
      sp = src.sp,
      ctermfg = src.ctermfg or ctermfg,
      ctermbg = src.ctermbg,
      cterm = vim.tbl_extend('force', src.cterm or {}, attrs),
      default = true, -- a colorscheme or the user may define them first
    }
    for _, a in ipairs({ 'bold', 'italic', 'underline', 'undercurl', 'strikethrough' }) do
      spec[a] = src[a]
    end
    spec = vim.tbl_extend('force', spec, attrs)
    vim.api.nvim_set_hl(0, name, spec)
  end
  -- Neovim 0.12's built-in inline completion draws with ComplHint, by default a link to NonText, which
  -- Neovim's default colorscheme gives no cterm colour: only then, the same colour with a cterm grey.
  local ok, hint = pcall(vim.api.nvim_get_hl, 0, { name = 'ComplHint' })
  if ok and hint.link == 'NonText' and vim.tbl_count(hint) == 1 then
    local nontext = vim.api.nvim_get_hl(0, { name = 'NonText', link = false })
    if nontext.ctermfg == nil then
      vim.api.nvim_set_hl(0, 'ComplHint', vim.tbl_extend('force', nontext, { ctermfg = 242 }))
    end
  end
end
highlights()
vim.api.nvim_create_autocmd('ColorScheme', {
  group = vim.api.nvim_create_augroup('canvas.highlights', { clear = true }),
  callback = highlights,
})

vim.api.nvim_create_user_command('CanvasFill', function(opts)
  require('canvas').fill_selection(opts)
end, { range = true, desc = 'canvas-ls: fill the visual selection (each block line is its own hole)' })

vim.api.nvim_create_user_command('CanvasRepair', function(opts)
  require('canvas').repair_selection(opts)
end, { range = true, desc = 'canvas-ls: repair the visual selection (re-denoise the tokens the model finds unlikely)' })

vim.api.nvim_create_user_command('CanvasFillBody', function()
  require('canvas').fill_body()
end, { desc = 'canvas-ls: regenerate the body of the function around the cursor' })

vim.api.nvim_create_user_command('CanvasStatus', function()
  require('canvas').status()
end, { desc = 'canvas-ls: model, device, busy' })

vim.api.nvim_create_user_command('CanvasSuggest', function()
  require('canvas').trigger()
end, { desc = 'canvas-ls: ask for an inline suggestion at the cursor' })
