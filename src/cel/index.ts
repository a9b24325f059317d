// Public surface of the storage selector module: compile, select, explain.
export {
  compileSelector,
  explainSelector,
  ineligibility,
  SELECTOR_VARIABLES,
  SelectorError,
  selectorVariables,
  selectStorage,
} from './selector.js';
export type {
  CompiledSelector,
  SelectOptions,
  SelectorErrorDetails,
  SelectorErrorKind,
  SourcePosition,
  StorageExplanation,
  StorageFacts,
} from './selector.js';
