// Type declarations for strongroom.js, the Strongroom hosted card fields SDK.
// The script is a classic <script>, not a module: it defines the global `Strongroom` only.

declare namespace Strongroom {
  /** Options of `Strongroom(publishableKey, options)`. */
  interface Options {
    /** The vault's origin; defaults to the origin strongroom.js was loaded from. */
    origin?: string;
  }

  /** Element types: one frame with every field, or one frame per field. */
  type ElementType = 'card' | 'cardNumber' | 'cardExpiry' | 'cardCvc' | 'cardName';

  /** Brands come from the vault's IIN table; these are the usual ones. */
  type Brand = 'visa' | 'mastercard' | 'amex' | 'discover' | (string & {});

  /** The only properties a frame accepts; other keys, and unsafe values, are dropped. */
  interface StyleRules {
    color?: string;
    backgroundColor?: string;
    fontFamily?: string;
    fontSize?: string;
    fontWeight?: string;
    fontStyle?: string;
    letterSpacing?: string;
    lineHeight?: string;
    textAlign?: string;
    textTransform?: string;
    padding?: string;
    borderColor?: string;
    borderRadius?: string;
    caretColor?: string;
  }

  interface Style {
    base?: StyleRules;
    /** Added while an input is invalid. */
    invalid?: StyleRules;
    /** Added while an input has focus. */
    focus?: StyleRules;
  }

  interface ElementOptions {
    style?: Style;
    /** `card` only: also ask for the cardholder's name (default false). */
    fields?: { name?: boolean };
    placeholders?: { number?: string; expiry?: string; cvc?: string; name?: string };
    /** The iframe's title, read by screen readers. */
    title?: string;
  }

  interface ElementsOptions {
    /** From the merchant's back end: `POST /v1/client_sessions` → `client_secret`. */
    clientSecret: string;
  }

  type ErrorCode =
    | 'card_number_incomplete' | 'card_number_invalid' | 'card_number_luhn' | 'card_brand_unknown'
    | 'expiry_incomplete' | 'expiry_invalid' | 'card_expired' | 'cvc_incomplete' | 'cvc_invalid'
    | 'live_card_in_test_mode' | 'test_card_in_live_mode'
    | 'client_session_expired' | 'client_session_used' | 'client_session_invalid'
    | 'rate_limited' | 'element_unavailable' | 'element_not_mounted'
    | 'tokenize_in_progress' | 'timeout' | 'api_connection_error' | 'api_error'
    | (string & {});

  interface ErrorInfo {
    code: ErrorCode;
    /** Written for the customer; safe to show as it is. */
    message: string;
  }

  /** A card token; it holds no card data beyond the last four digits. */
  interface Token {
    id: string;
    object?: 'card_token';
    brand: Brand;
    last4: string;
    masked_number: string;
    exp_month: number;
    exp_year: number;
    mode?: 'test' | 'live';
    created?: number;
    expires_at?: number;
    cvc_available?: boolean;
  }

  /** Tokenizing never rejects: it resolves a token or an error. */
  type TokenizeResult = { token: Token; error?: undefined } | { token?: undefined; error: ErrorInfo };

  interface ReadyEvent { elementType: ElementType; state: 'open' | 'expired' | 'complete' }
  interface ChangeEvent {
    elementType: ElementType;
    complete: boolean;
    empty: boolean;
    /** Number fields only; null until the brand is known. */
    brand: Brand | null;
    error: ErrorInfo | null;
  }
  interface FocusEvent { elementType: ElementType }
  interface ErrorEvent { elementType: ElementType; error: ErrorInfo }

  interface EventMap {
    ready: ReadyEvent;
    change: ChangeEvent;
    focus: FocusEvent;
    blur: FocusEvent;
    /** Enter in the last field: the customer asks to pay. */
    submit: FocusEvent;
    /** The session is closed, or the frame never loaded (`element_unavailable`). */
    error: ErrorEvent;
  }

  interface Element {
    /** Places the iframe in the element (or the first match of the selector). */
    mount(target: string | HTMLElement): Element;
    on<K extends keyof EventMap>(event: K, handler: (event: EventMap[K]) => void): Element;
    off<K extends keyof EventMap>(event: K, handler: (event: EventMap[K]) => void): Element;
    /** For split fields, tokenizes the whole group (as `Elements.tokenize`). */
    tokenize(): Promise<TokenizeResult>;
    focus(): void;
    clear(): void;
    update(options: { style?: Style }): void;
    /** Removes the iframe; `mount` may place it again. */
    unmount(): void;
    /** Removes the iframe for good and frees the type in its group. */
    destroy(): void;
  }

  interface Elements {
    create(type: ElementType, options?: ElementOptions): Element;
    getElement(type: ElementType): Element | null;
    /** Submits through the number field (or the card field), which gathers the others. */
    tokenize(): Promise<TokenizeResult>;
  }

  /** Card data for direct mode, where the merchant's page itself holds it (SAQ A-EP). */
  interface CardData {
    number: string;
    exp_month: number | string;
    /** Four digits, or two (taken as 20YY). */
    exp_year: number | string;
    cvc?: string;
    cardholder_name?: string;
  }

  interface Instance {
    elements(options: ElementsOptions): Elements;
    /** Direct mode: posts the card from this page straight to the vault, cross-origin. */
    tokenize(card: CardData, options: ElementsOptions): Promise<TokenizeResult>;
  }
}

/** Creates a Strongroom client for a publishable key (`pk_test_…` or `pk_live_…`). */
declare function Strongroom(publishableKey: string, options?: Strongroom.Options): Strongroom.Instance;

interface Window {
  Strongroom: typeof Strongroom;
}
