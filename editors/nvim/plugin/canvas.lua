-- canvas-ls: commands and highlight groups. The server itself is configured by require("canvas").setup().
if vim.g.loaded_canvas_ls then
  return
end
vim.g.loaded_canvas_ls = true

local function highlights()
  -- default = true: a colorscheme or the user may define them first.
  vim.api.nvim_set_hl(0, 'CanvasGhost', { link = 'Comment', default = true }) -- inline suggestion
  vim.api.nvim_set_hl(0, 'CanvasLive', { link = 'Comment', default = true }) -- live canvas text
  vim.api.nvim_set_hl(0, 'CanvasLiveInfo', { link = 'NonText', default = true }) -- "canvas 3/16"
  vim.api.nvim_set_hl(0, 'CanvasLiveReplaced', { link = 'DiagnosticUnnecessary', default = true })
end
highlights()
vim.api.nvim_create_autocmd('ColorScheme', {
  group = vim.api.nvim_create_augroup('canvas.highlights', { clear = true }),
  callback = highlights,
})

vim.api.nvim_create_user_command('CanvasFill', function(opts)
  require('canvas').fill_selection(opts)
end, { range = true, desc = 'canvas-ls: fill the visual selection (each block line is its own hole)' })

vim.api.nvim_create_user_command('CanvasFillBody', function()
  require('canvas').fill_body()
end, { desc = 'canvas-ls: regenerate the body of the function around the cursor' })

vim.api.nvim_create_user_command('CanvasStatus', function()
  require('canvas').status()
end, { desc = 'canvas-ls: model, device, busy' })

vim.api.nvim_create_user_command('CanvasSuggest', function()
  require('canvas').trigger()
end, { desc = 'canvas-ls: ask for an inline suggestion at the cursor' })
