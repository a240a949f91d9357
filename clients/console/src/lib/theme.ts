// Light and dark themes: the system's choice (`prefers-color-scheme`) unless the user
// picked one, which is remembered in localStorage. The resolved theme is the
// `data-theme` attribute of <html>, which the stylesheet follows.

export type ThemeChoice = 'system' | 'light' | 'dark';
export type Theme = 'light' | 'dark';

export const THEME_KEY = 'roomcast.console.theme';
const DARK_QUERY = '(prefers-color-scheme: dark)';

export function storedChoice(): ThemeChoice {
  const value = localStorage.getItem(THEME_KEY);
  return value === 'light' || value === 'dark' ? value : 'system';
}

export function resolve(choice: ThemeChoice, systemDark: boolean): Theme {
  if (choice === 'system') return systemDark ? 'dark' : 'light';
  return choice;
}

/** The choice after `choice` in the toggle's cycle: system → light → dark → system. */
export function nextChoice(choice: ThemeChoice): ThemeChoice {
  return choice === 'system' ? 'light' : choice === 'light' ? 'dark' : 'system';
}

export function systemDark(): boolean {
  return window.matchMedia(DARK_QUERY).matches;
}

/** Applies `choice` to the page now. */
export function applyTheme(choice: ThemeChoice): Theme {
  const theme = resolve(choice, systemDark());
  document.documentElement.dataset.theme = theme;
  return theme;
}

/** Remembers and applies `choice`. */
export function chooseTheme(choice: ThemeChoice): Theme {
  if (choice === 'system') localStorage.removeItem(THEME_KEY);
  else localStorage.setItem(THEME_KEY, choice);
  return applyTheme(choice);
}

/** Follows the system's theme while the stored choice is `system`. */
export function followSystem(onChange: (theme: Theme) => void): () => void {
  const query = window.matchMedia(DARK_QUERY);
  const listener = () => {
    if (storedChoice() === 'system') onChange(applyTheme('system'));
  };
  query.addEventListener('change', listener);
  return () => query.removeEventListener('change', listener);
}
