// The one import of the vendored Preact + hooks + htm module (htm/preact/standalone), so the
// other modules do not repeat its path.
export {
  html, render, useState, useEffect, useLayoutEffect, useRef, useMemo, useCallback, createContext, useContext,
} from '../vendor/htm/preact-standalone.module.js';
