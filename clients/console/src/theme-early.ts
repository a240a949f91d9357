// Loaded synchronously in <head> of both pages, before the stylesheet paints anything,
// so the page never flashes the other theme.
import { applyTheme, followSystem, storedChoice } from './lib/theme';

applyTheme(storedChoice());
followSystem(() => {});
