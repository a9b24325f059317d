#!/usr/bin/env node
// Entry point of the published package: runs the compiled daemon/CLI from dist/.
import '../dist/main.js';
