# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release coordination shared by the playbooks (module and action plugin ``release_lock``).

``lock`` holds the decisions of the release lock: who this controller run is, what the lock's
owner record says, whether its holder is a killed run of this controller, and the messages.
"""
