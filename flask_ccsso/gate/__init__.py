"""The request gate: who is calling, and may they?

* :mod:`.current` -- the identity of a request (session, bearer token, refresh);
* :mod:`.freshness` -- is a sign-in recent and strong enough for a skill;
* :mod:`.policy` -- the one skill evaluator;
* :mod:`.decorators` -- ``requires_skill``, ``login_required``, ``has_skill``,
  ``skill_guard`` and :func:`~.decorators.enforce`, the one check behind them;
* :mod:`.stepup`, :mod:`.bearer`, :mod:`.refresh`.

The gate reads per-app state through :func:`flask_ccsso.state.get_state`; it
never imports the extension, the views or the CLI.
"""
