// The console's only framework: Preact (components, hooks) with htm (tagged templates instead of
// JSX, so there is no build step). Text and attribute values are escaped by Preact: untrusted data
// (traits, event properties, names) is always rendered as text — never as HTML.
import { h, render, Fragment, createContext, cloneElement, isValidElement } from '../vendor/preact.mjs'
import { useState, useEffect, useRef, useMemo, useCallback, useContext, useReducer } from '../vendor/preact-hooks.mjs'
import htm from '../vendor/htm.mjs'

export const html = htm.bind(h)
export { h, render, Fragment, createContext, cloneElement, isValidElement, useState, useEffect, useRef, useMemo, useCallback, useContext, useReducer }
