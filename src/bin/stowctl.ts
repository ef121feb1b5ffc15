import { Command } from 'commander';
import { STOWAGE_VERSION } from '../agent/version.js';

// The image commands (status, push, distribute, inspect, operation list/get) talk to the control
// plane's REST API and arrive with it; until then stowctl only answers --version and --help.
const program = new Command('stowctl')
  .description('Stowage operator CLI')
  .version(STOWAGE_VERSION)
  .option('--json', 'print whole response objects as JSON');

program.parse(process.argv);
